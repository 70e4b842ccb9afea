"""Where the rows come from: arrays in memory, memory-mapped files, chunk streams.

A source gives its rows as a stream of blocks, one read per pass:
``blocks()`` yields (X_block, Y_block) pairs, checked (``fastten.accumulate.
check_block``: width, dtype and finiteness, naming the block). Sources:

``ArraySource``   arrays in memory (checked once by the caller), cut into
                  blocks of ``block_rows`` rows;
``MemmapSource``  a memory-mapped array (``numpy.memmap`` or an ``.npy``
                  path opened with ``mmap_mode="r"``): each block is copied
                  out, checked, and its pages released from the process
                  (``madvise(MADV_DONTNEED)``), so a pass never holds more
                  than a block of the file in memory;
``ChunkSource``   a callable returning a fresh iterator of (X_block, y_block)
                  chunks on every call (one call per pass); every pass must
                  give the same rows.

``Mapped(source, fn)`` applies ``fn(X_block, Y_block)`` to each block (the
fit's standardisation and control variate, row by row).
"""

import copy
import logging
import mmap

import numpy as np

from .accumulate import Pass, check_block
from ._workers import chunks

logger = logging.getLogger("fastten")

# Rows per block for arrays and memory-mapped files: a multiple of the
# kernels' BLOCK (2048), so a kernel adds the same float64 block sums in the
# same order whether it is given the whole array or its blocks.
BLOCK_ROWS = 32 * 2048


class ArraySource:
    """Checked arrays X (n, d) and Y (n, ...) or None. With ``workers`` (a
    ``fastten._workers.Workers``) the blocks are the workers' chunks of the
    rows (``chunks(n, block_rows)``), read side by side (``run_pass``)."""

    def __init__(self, X, Y=None, block_rows=BLOCK_ROWS, workers=None):
        self.X, self.Y, self.block_rows, self.workers = X, Y, block_rows, workers
        self.n, self.width, self.dtype = X.shape[0], X.shape[1], X.dtype

    def blocks(self):
        if self.workers is None:
            bounds = ((i, min(self.n, i + self.block_rows)) for i in range(0, self.n, self.block_rows))
        else:
            bounds = chunks(self.n, self.block_rows)
        for i, j in bounds:
            yield self.X[i:j], None if self.Y is None else self.Y[i:j]


class _Checked:
    """Checks each block against the first (width, dtype, label columns) and,
    after the first pass, that every pass gives the same number of rows."""

    n = None
    width = dtype = label_width = None

    def _check(self, index, X, Y, labels):
        X, Y = check_block(X, Y, index, width=self.width, dtype=self.dtype, labels=labels,
                           label_width=self.label_width)
        if self.width is None:
            self.width, self.dtype = X.shape[1], X.dtype
            self.label_width = None if Y is None else (1 if Y.ndim == 1 else Y.shape[1])
            self.label_ndim = None if Y is None else Y.ndim
        return X, Y

    def _finish(self, rows, blocks):
        if rows == 0:
            raise ValueError(f"{self.name}: expected at least one row, got {blocks} chunk(s) and no rows"
                             if blocks else f"{self.name}: expected at least one chunk, got an empty iterator")
        if self.n is None:
            self.n = rows
        elif rows != self.n:
            raise ValueError(f"{self.name}: expected every pass to give the same {self.n} rows, got {rows} on a "
                             f"later pass (a source that cannot be replayed)")


class MemmapSource(_Checked):
    """A memory-mapped (n, d) array read in blocks; Y in memory or None.
    Each block is a copy, so ``workers`` may work on it while the next is
    read."""

    name = "X"

    def __init__(self, X, Y=None, block_rows=BLOCK_ROWS, workers=None):
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D memory-mapped array (n_samples, n_features), got shape {X.shape}")
        if Y is not None and np.shape(Y)[0] != X.shape[0]:
            raise ValueError(f"y: expected {X.shape[0]} labels (one per row of X), got {np.shape(Y)[0]}")
        self.X, self.Y, self.block_rows, self.workers = X, Y, block_rows, workers
        self._mm = _find_mmap(X)

    def blocks(self):
        rows = 0
        for index, i in enumerate(range(0, self.X.shape[0], self.block_rows)):
            j = min(self.X.shape[0], i + self.block_rows)
            X = np.array(self.X[i:j])
            self._release(i, j)
            X, Y = self._check(index, X, None if self.Y is None else self.Y[i:j], "optional")
            rows += X.shape[0]
            yield X, Y
        self._finish(rows, 1)

    def _release(self, i, j):
        """Drop the pages of rows i:j from this process (they stay in the
        page cache): reading a mapped file block by block otherwise keeps
        every page read resident, the whole file after one pass."""
        if self._mm is None:
            return
        mm, base = self._mm
        row = self.X.strides[0]
        start = self.X.__array_interface__["data"][0] - base + i * row
        stop = start + (j - i) * row
        start -= start % mmap.PAGESIZE
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
        except (OSError, ValueError) as exc:  # not fatal: the pages stay resident
            logger.debug("MemmapSource: madvise failed (%s); the file's pages stay resident", exc)
            self._mm = None


def _find_mmap(X):
    """(the mmap.mmap behind a numpy.memmap, its start address), or None
    when X is not a C-contiguous view of one or the platform cannot release
    pages."""
    mm = getattr(X, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED") \
            or not X.flags.c_contiguous:
        return None
    view = np.frombuffer(mm, dtype=np.uint8)
    base = view.__array_interface__["data"][0]
    del view
    return mm, base


class ChunkSource(_Checked):
    """``chunks()`` returns an iterator of (X_block, y_block) pairs. Read in
    the caller's thread only: an iterator may hand out one buffer refilled
    for every chunk."""

    name = "X"
    workers = None

    def __init__(self, chunks):
        self.chunks = chunks

    def blocks(self):
        rows = count = 0
        for index, chunk in enumerate(self.chunks()):
            if not (isinstance(chunk, tuple) and len(chunk) == 2):
                raise TypeError(f"block {index}: expected a pair (X_block, y_block), got {type(chunk).__name__}")
            X, Y = self._check(index, *chunk, "required")
            rows += X.shape[0]
            count += 1
            yield X, Y
        self._finish(rows, count)


class Mapped:
    """``fn(X_block, Y_block)`` of each block of ``source``. Over a
    distributed source (``fastten._dask``), the map runs with each chunk's
    task, on the workers."""

    def __init__(self, source, fn):
        self.source, self.fn = source, fn

    @property
    def n(self):
        return self.source.n

    @property
    def workers(self):
        return getattr(self.source, "workers", None)

    def deferred(self):
        """(the unmapped source, the map): workers apply the map, each to
        its block."""
        base, fn = self.source, None
        if isinstance(base, Mapped):
            base, fn = base.deferred()
        return base, self.fn if fn is None else _Then(fn, self.fn)

    @property
    def distributed(self):
        return getattr(self.source, "distributed", False)

    def blocks(self):
        for X, Y in self.source.blocks():
            yield self.fn(X, Y)

    def reduce(self, accumulators, fn=None):
        return self.source.reduce(accumulators, _Then(self.fn, fn))

    def collect(self, per_chunk, fn=None):
        return self.source.collect(per_chunk, _Then(self.fn, fn))

    def gather(self, rows, fn=None):
        return self.source.gather(rows, _Then(self.fn, fn))


class _Then:
    """``g(*f(X, Y))``, or ``f(X, Y)`` when g is None: row maps composed (a
    module-level class, so it pickles to worker processes)."""

    def __init__(self, f, g=None):
        self.f, self.g = f, g

    def __call__(self, X, Y):
        X, Y = self.f(X, Y)
        return (X, Y) if self.g is None else self.g(X, Y)


def run_pass(source, *accumulators, counter=None, stage="pass"):
    """One pass of ``source`` feeding the accumulators, counted in
    ``counter`` under ``stage``: ``Pass.run`` over its blocks (checked by
    the source), or over a distributed source a tree reduction of
    accumulators over its chunks. Returns the accumulator, or a tuple of
    them, as ``Pass.run``."""
    if getattr(source, "distributed", False):
        out = source.reduce(accumulators)
    elif getattr(source, "workers", None) is not None and not any(acc.n for acc in accumulators):
        out = _pass_by_block(source, accumulators)
    else:
        return Pass(counter, stage).run(source.blocks(), *accumulators, check=False)
    if counter is not None:
        counter.count(stage)
    return out if len(out) != 1 else out[0]


def _pass_by_block(source, accumulators):
    """A pass on ``source.workers``: each block feeds fresh copies of the
    accumulators in a worker thread (after the source's row map, if any),
    and the copies are merged into ``accumulators`` in block order, on any
    number of threads alike."""
    base, fn = source.deferred() if isinstance(source, Mapped) else (source, None)
    # Empty copies to feed, taken before the merges fill ``accumulators``;
    # the configurations are shared, read-only (an Activation compares by
    # identity).
    shared = {id(value): value for acc in accumulators for value in (getattr(acc, name) for name in acc._config())}
    empty = copy.deepcopy(accumulators, dict(shared))

    def feed(X, Y):
        if fn is not None:
            X, Y = fn(X, Y)
        fresh = copy.deepcopy(empty, dict(shared))
        if X.shape[0]:
            Pass().run([(X, Y)], *fresh, check=False)
        return fresh

    rows = 0
    for part in source.workers.imap(feed, base.blocks()):
        rows += part[0].n
        for acc, other in zip(accumulators, part):
            acc.merge(other)
    if not rows:
        raise ValueError("blocks: expected at least one row, got an empty stream of blocks")
    return accumulators


def each_block(source, per_block):
    """``per_block(X_block, Y_block)`` of every block, in order, in one pass
    (a list; over a distributed source each runs with its chunk's task)."""
    if getattr(source, "distributed", False):
        return source.collect(per_block)
    return [per_block(X, Y) for X, Y in source.blocks()]


def gather(source, rows):
    """The blocks' rows at the sorted indices ``rows`` (or all rows, None),
    concatenated, in one pass: (X, Y)."""
    if getattr(source, "distributed", False):
        return source.gather(rows)
    Xs, Ys, start = [], [], 0
    for X, Y in source.blocks():
        stop = start + X.shape[0]
        if rows is None:
            pick = slice(None)
        else:
            lo, hi = np.searchsorted(rows, [start, stop])
            pick = rows[lo:hi] - start
        Xs.append(np.array(X[pick]))
        Ys.append(None if Y is None else np.array(Y[pick]))
        start = stop
    return np.concatenate(Xs), None if Ys[0] is None else np.concatenate(Ys)
