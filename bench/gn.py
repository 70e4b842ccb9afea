"""The Gauss-Newton product kernel against its BLAS yardstick, by block size.

``python -m bench gn`` draws, for each d, X (n x d standard normal, in the
kernel's dtype), a sigmoid network of k units (weights standard normal
times 0.05) and a direction v, from numpy.random.default_rng(seed=0), and
times one product J^T J v (``fastten._kernels.network.gn_product_acc``,
what every CG iteration of the refinement costs) with blocks of
``entries / d`` rows (at least 64, at most the kernels' BLOCK) for each
block budget in ``--entries``, next to the two BLAS products it is made of
taken whole: X @ V then X^T @ W (V d x k, W n x k). The refinement runs its
CG products in float32 from n d >= 2^20 entries on (``MIXED_PRECISION_MIN``),
so float32 is the default. The kernel's result does not depend on the
block size beyond rounding (checked here to 1e-5 relative in float32). On
a shared machine contention only adds time, so the table reports the
minimum over --repeat runs after a warm-up, and the median beside it; the
BLAS is limited to one thread (threadpoolctl), as in ``fit``.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from fastten._kernels.contractions import BLOCK
from fastten._kernels.network import GN_BLOCK_ENTRIES, gn_block, gn_product_acc
from fastten._refine import _Net, _State

from . import _timing as T

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def add_parser(subparsers):
    p = subparsers.add_parser("gn", help="the Gauss-Newton product kernel by block size (issue #11)",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="rows")
    p.add_argument("--d", type=int, nargs="+", default=[50, 200, 1000], help="input dimensions")
    p.add_argument("--k", type=int, default=10, help="hidden units")
    p.add_argument("--entries", type=int, nargs="+", default=[1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18],
                   help="block budgets in entries (rows = entries // d, at least 64)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="dtype of X")
    p.add_argument("--repeat", type=int, default=15, help="timed runs after one warm-up")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.set_defaults(func=run)


def _times(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def _product(X, state, net, v, block):
    VA, vb1, VA2, vb2 = net.unpack(v)
    out = (np.zeros((net.d, net.k)), np.zeros(net.k), np.zeros((net.k, 1)), np.zeros(1))
    gn_product_acc(X, state.D, state.S, np.ascontiguousarray(state.A2), np.ascontiguousarray(VA, dtype=X.dtype),
                   vb1, np.ascontiguousarray(VA2), vb2, *out, block)
    return out[0]


def run(args):
    from threadpoolctl import threadpool_limits

    records, rows = [], []
    with threadpool_limits(1):
        for d in args.d:
            rng = np.random.default_rng(0)
            X = T.standard_normal(rng, (args.n, d), args.dtype)
            net = _Net(d, args.k, 1)
            state = _State(X, rng.standard_normal((args.n, 1)), 0.05 * rng.standard_normal(net.size), net,
                           "sigmoid")
            v = rng.standard_normal(net.size)
            V = np.ascontiguousarray(net.unpack(v)[0], dtype=X.dtype)
            W = rng.standard_normal((args.n, args.k)).astype(X.dtype)
            blas = _times(lambda: (X @ V, X.T @ W), args.repeat)
            reference = _product(X, state, net, v, gn_block(d))
            for entries in args.entries:
                block = max(64, min(BLOCK, entries // d))
                out = _product(X, state, net, v, block)
                error = float(np.abs(out - reference).max() / np.abs(reference).max())
                best, median = _times(lambda: _product(X, state, net, v, block), args.repeat)
                records.append({"d": d, "n": args.n, "k": args.k, "dtype": args.dtype, "entries": entries,
                                "rows_per_block": block, "min_s": best, "median_s": median,
                                "blas_min_s": blas[0], "rel_diff": error})
                rows.append([d, entries, block, f"{best * 1e3:.1f}", f"{median * 1e3:.1f}",
                             f"{blas[0] * 1e3:.1f}", f"{best / blas[0]:.2f}", f"{error:.1e}",
                             "default" if block == gn_block(d) else ""])
    table = T.markdown_table(["d", "block entries", "rows per block", "min ms", "median ms", "BLAS X@V, X^T@W min ms",
                              "min / BLAS", "rel. diff", ""], rows, "rrrrrrrrl")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = (f"# Gauss-Newton product by block size\n\n- command: `python -m bench gn --n {args.n} --d "
            f"{' '.join(map(str, args.d))} --k {args.k} --dtype {args.dtype} --repeat {args.repeat}`\n"
            f"- default: GN_BLOCK_ENTRIES = {GN_BLOCK_ENTRIES}\n- machine: {T.cpu_model()}, os.cpu_count() = "
            f"{T.machine_info()['cpu_count']}, one BLAS thread\n- date: {time.strftime('%Y-%m-%d %H:%M %z')}\n\n"
            f"{table}\n")
    T.write_jsonl(args.out / f"gn-{stamp}.jsonl", records)
    (args.out / f"gn-{stamp}.md").write_text(text)
    print(text)
