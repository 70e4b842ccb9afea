"""Dask arrays as a source of rows: each pass a tree reduction of accumulators.

``DaskSource(X, y)`` holds a ``dask.array`` X (n, d), chunked along samples
only, and its labels (a dask array with the same row chunks, or an array in
memory, cut at X's row chunks). A pass is a task graph: one task per row
chunk checks the chunk (``fastten.accumulate.check_block``, naming the chunk
and its rows), applies the fit's row maps (standardisation, control
variate), and feeds a fresh copy of the accumulators; the chunks'
accumulators are then merged (``Accumulator.merge``) in a tree of fan-in
``SPLIT_EVERY``, in chunk order, and only the final accumulators travel to
the caller. The graph is computed by ``dask.compute``, so it runs on
whatever scheduler is active: threads by default, a ``dask.distributed``
cluster when a ``Client`` exists. The fastten kernels are serial and release
the GIL, so worker threads run them side by side.

Dask is imported here only when a source is built, and this module is
imported by ``fit`` without importing Dask: ``is_dask_array`` recognises a
dask array only when ``dask.array`` has already been imported (as it must
have been, for the caller to hold one).
"""

import copy
import sys
import uuid

import numpy as np

from .accumulate import Pass, check_block
from ._validation import check_targets

# Fan-in of the merge tree: log_8(chunks) levels; each merge task adds up to
# eight accumulators of O(d m) or O(k^3) floats.
SPLIT_EVERY = 8


def is_dask_array(X):
    """Whether X is a ``dask.array.Array`` (False when Dask is not imported)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


def _chunk(X, Y, index, start, fn):
    """A chunk checked and mapped: (X, Y). Errors name the chunk and its rows."""
    try:
        X, Y = check_block(X, Y, index, labels="required")
    except (ValueError, TypeError) as exc:
        message = str(exc).removeprefix(f"block {index}")
        raise type(exc)(f"X: dask chunk {index} (rows {start}:{start + np.shape(X)[0]}){message}") from None
    return (X, Y) if fn is None else fn(X, Y)


def _feed(X, Y, index, start, shared):
    """Fresh copies of the accumulators fed one chunk (``shared``: the row
    map and the empty accumulators, one object for every task)."""
    fn, accumulators = shared
    X, Y = _chunk(X, Y, index, start, fn)
    accumulators = copy.deepcopy(accumulators)
    if X.shape[0]:
        Pass().run([(X, Y)], *accumulators, check=False)
    return accumulators


def _merge(*parts):
    """The first part's accumulators (copied) merged with the others', in order."""
    merged = copy.deepcopy(parts[0])
    for part in parts[1:]:
        for acc, other in zip(merged, part):
            # Every part descends from the same accumulators (the graph's
            # shared object), so their configurations are one; copied or
            # pickled between processes they are equal but not identical
            # objects (an Activation compares by identity): share the first's.
            other = copy.copy(other)
            for name in acc._config():
                setattr(other, name, getattr(acc, name))
            acc.merge(other)
    return merged


def _apply(X, Y, index, start, shared, *args):
    """``per_chunk(X, Y, *args)`` of a chunk checked and mapped."""
    fn, per_chunk = shared
    return per_chunk(*_chunk(X, Y, index, start, fn), *args)


def _pick(X, Y, rows):
    return np.array(X[rows]), np.array(Y[rows])


class DaskSource:
    """Rows of a dask array X (n, d) and labels y, read by tasks per row chunk.

    The arguments are checked here (shape, chunking, dtype kind; labels in
    memory also for finiteness); the values of X and y are checked chunk by
    chunk in every pass, on the workers. ``label_width`` and ``label_ndim``
    describe the labels, ``n`` and ``width`` the rows.
    """

    name = "X"
    distributed = True

    def __init__(self, X, y):
        import dask.array as da

        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D dask array (n_samples, n_features), got shape {X.shape}")
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError("X: expected a dask array with known chunk sizes, got unknown row chunk sizes "
                             "(call X.compute_chunk_sizes() first)")
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X: expected at least one row and one column, got shape {X.shape}")
        if len(X.chunks[1]) != 1:
            raise ValueError(f"X: expected a dask array chunked along samples only (one chunk across its "
                             f"{X.shape[1]} features), got {len(X.chunks[1])} column chunks of widths "
                             f"{X.chunks[1][:5]}{'...' if len(X.chunks[1]) > 5 else ''}; rechunk it with "
                             f"X.rechunk({{1: -1}})")
        if X.dtype.kind not in "iuf" or X.dtype.kind == "b":
            raise TypeError(f"X: expected a dask array of real numbers, got dtype {X.dtype}")
        rows = X.chunks[0]
        if y is None:
            raise ValueError("y: expected labels, one per row of the dask array X, got None")
        if is_dask_array(y):
            if y.ndim not in (1, 2) or y.shape[0] != X.shape[0] or (y.ndim == 2 and y.shape[1] < 1):
                raise ValueError(f"y: expected a dask array of shape ({X.shape[0]},) or ({X.shape[0]}, m), one "
                                 f"label per row of X, got shape {y.shape}")
            if y.dtype.kind not in "iuf" or y.dtype.kind == "b":
                raise TypeError(f"y: expected real labels, got dtype {y.dtype}")
            if y.chunks[0] != rows:
                raise ValueError(f"y: expected the row chunks of X {_chunks(rows)}, got {_chunks(y.chunks[0])}; "
                                 f"rechunk it with y.rechunk({{0: X.chunks[0]}})")
            if y.ndim == 2 and len(y.chunks[1]) != 1:
                y = y.rechunk({1: -1})
        else:
            Y, single = check_targets(y, X.shape[0])
            y = Y[:, 0] if single else Y
            y = da.from_array(y, chunks=(rows,) if single else (rows, -1))
        self.X, self.Y = X, y
        self.n, self.width = X.shape
        self.label_ndim = y.ndim
        self.label_width = 1 if y.ndim == 1 else y.shape[1]
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)

    def _tasks(self, task, shared, args_of=None):
        """One task per chunk: ``task(X_chunk, Y_chunk, index, start, shared,
        *args_of(index))``; ``shared`` enters the graph once."""
        import dask

        shared = dask.delayed(shared, name=f"fastten-shared-{uuid.uuid4().hex}", traverse=False)
        xs = self.X.to_delayed().reshape(-1)
        ys = self.Y.to_delayed().reshape(-1)
        return [dask.delayed(task, pure=False)(x, y, i, int(self.starts[i]), shared,
                                               *(() if args_of is None else args_of(i)))
                for i, (x, y) in enumerate(zip(xs, ys))]

    def reduce(self, accumulators, fn=None):
        """The accumulators (a tuple; those given are unchanged) fed every
        row: one task per chunk, then a merge tree in chunk order."""
        import dask

        parts = self._tasks(_feed, (fn, tuple(accumulators)))
        while len(parts) > 1:
            parts = [dask.delayed(_merge, pure=False)(*parts[i:i + SPLIT_EVERY])
                     for i in range(0, len(parts), SPLIT_EVERY)]
        return dask.compute(parts[0])[0]

    def collect(self, per_chunk, fn=None):
        """``per_chunk(X_chunk, Y_chunk)`` of every chunk, in order (a list)."""
        import dask

        return list(dask.compute(*self._tasks(_apply, (fn, per_chunk))))

    def gather(self, rows, fn=None):
        """The rows at the sorted indices ``rows`` (all rows, None) and their
        labels, (X, Y) in memory; each chunk sends only its picked rows."""
        import dask

        if rows is None:
            picks = [slice(None)] * (len(self.starts) - 1)
        else:
            bounds = np.searchsorted(rows, self.starts)
            picks = [rows[bounds[i]:bounds[i + 1]] - self.starts[i] for i in range(len(self.starts) - 1)]
        parts = dask.compute(*self._tasks(_apply, (fn, _pick), lambda i: (picks[i],)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def blocks(self):
        """The chunks one at a time, checked, computed in order (for callers
        that need a stream: every chunk travels to the caller)."""
        import dask

        for i, (x, y) in enumerate(zip(self.X.to_delayed().reshape(-1), self.Y.to_delayed().reshape(-1))):
            X, Y = dask.compute(x, y)
            yield _chunk(X, Y, i, int(self.starts[i]), None)


def _chunks(rows):
    return f"({', '.join(map(str, rows[:4]))}{', ...' if len(rows) > 4 else ''}; {len(rows)} chunks)"
