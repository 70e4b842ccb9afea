"""Threads of one fit over fixed chunks of rows.

``Workers(threads)`` runs a function of a row range on each chunk of rows,
``chunks(n)``, whose boundaries depend on n only: the partial results are
combined in chunk order whatever the thread count, so a fit gives the same
bits on 1 thread and on 8. The kernels release the GIL, so the chunks run
side by side; each thread's BLAS calls run on the single BLAS thread the
fit allows (``fit(blas_threads=1)``), so nothing is oversubscribed.

One thread runs every chunk in the caller's thread, with no executor. Each
fit makes its own ``Workers`` and closes it when it returns: no state is
shared between fits, and fits in several threads of a program do not wait
for each other's queue.
"""

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Workers", "chunks", "default_threads"]

# Chunk boundaries: n split into MAX_CHUNKS chunks of about equal length,
# or fewer so that each has at least MIN_CHUNK_ROWS rows, below which a
# chunk's work (about 0.2 ms for a product at d=50) is of the order of the
# hand-off between threads. Eight chunks keep two to four threads evenly
# loaded.
MAX_CHUNKS = 8
MIN_CHUNK_ROWS = 8192


def default_threads():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunks(n, limit=None):
    """Row ranges [(start, stop), ...] covering range(n) in order, of about
    equal length (at most ``limit`` rows each): a function of n and limit
    only."""
    count = min(MAX_CHUNKS, max(1, n // MIN_CHUNK_ROWS))
    size = -(-n // count) if n else 1
    if limit is not None:
        size = max(1, min(size, limit))
    return [(start, min(n, start + size)) for start in range(0, n, size)]


class Workers:
    """A pool of ``threads`` threads (1: none; the caller's thread works).

    Use it as a context manager, or call ``close``."""

    def __init__(self, threads=1):
        self.threads = int(threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fastten") if self.threads > 1 else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def map(self, fn, items):
        """[fn(*item) for item in items], in order (``imap``)."""
        return list(self.imap(fn, items))

    def imap(self, fn, items):
        """fn(*item) for each item, yielded in order as they finish; at most
        2 * threads items are taken from the iterable ahead of the result
        handed back, so a stream of blocks read from disk is not read whole
        into memory, nor are its results held all at once."""
        if self._pool is None:
            for item in items:
                yield fn(*item)
            return
        pending = deque()
        for item in items:
            pending.append(self._pool.submit(fn, *item))
            if len(pending) >= 2 * self.threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def rows(self, fn, n):
        """[fn(start, stop) for each chunk of range(n)], in chunk order."""
        return self.map(fn, chunks(n))

    def fill(self, out, fn):
        """out[start:stop] = fn(start, stop) for each chunk of out's rows;
        returns out."""
        def part(start, stop):
            out[start:stop] = fn(start, stop)
        self.rows(part, out.shape[0])
        return out

    def sum_rows(self, fn, n):
        """The sum of fn(start, stop) over the chunks of range(n), added in
        chunk order (arrays or tuples of arrays)."""
        parts = self.rows(fn, n)
        total = parts[0]
        for part in parts[1:]:
            total = tuple(a + b for a, b in zip(total, part)) if isinstance(total, tuple) else total + part
        return total


SERIAL = Workers(1)
"""The caller's thread alone (no executor, nothing to close)."""
