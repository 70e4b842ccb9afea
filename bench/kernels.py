"""Benchmark of the moment kernels against a BLAS yardstick.

``python -m bench kernels`` draws one problem (X n x d standard normal, y
standard normal, U d x m and W d x k standard normal / sqrt(d), in that order
from numpy.random.default_rng(seed=0)) and, in one process, times each
fastten.moments function on it next to the numpy operations it should be
compared with: X @ U (a BLAS product with the shapes of the batched
contraction) and, for the projected moments, X @ W followed by one pass over
Z = X W. Each timing is the median of --repeat runs after one warm-up run;
the warm-up is where peak memory growth is measured. Three further rows help
read the others: X @ U into a preallocated output (the yardstick without
allocating and faulting in its n x m result), one pass X.sum(axis=0), and
the input check of X that every fastten.moments call makes.

Before any timing:

* accuracy: every function is checked on a small problem (n=2000, d=10)
  against plain numpy (T(I,u,u) by its closed formula, the others by
  contracting the dense moment tensor); the error reported is
  max|fastten - reference| / max|reference|. These are also the first calls
  of the functions in the process, so Numba compilation (or the load from
  Numba's on-disk cache) happens there and is reported as "first call";
* thread independence: if threadpoolctl is installed, every function is run
  on a medium problem with the BLAS limited to 1 thread and with the default
  thread count, and the two results are compared bit for bit.
"""

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import _timing as T

SEED = 0
SMALL = dict(n=2000, d=10, m=3, k=4)  # accuracy check (dense tensors: d^4)
MEDIUM_N = 3 * 2048 + 77             # thread check: several kernel blocks
K4_MAX = 8                           # the fourth projected moment uses k <= 8
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_parser(subparsers):
    """Register the 'kernels' sub-command."""
    p = subparsers.add_parser(
        "kernels",
        help="time the moment kernels against X @ U on one large problem",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=_positive_int, default=10**6, help="samples (rows of X)")
    p.add_argument("--d", type=_positive_int, default=256, help="features (columns of X)")
    p.add_argument("--m", type=_positive_int, default=32, help="vectors in the batched contractions (columns of U)")
    p.add_argument("--k", type=_positive_int, default=32,
                   help=f"columns of W for the third projected moment (the fourth uses min(k, {K4_MAX}))")
    p.add_argument("--repeat", type=_positive_int, default=5, help="timed runs after the warm-up")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="dtype of X, y, U, W")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help="directory for kernels.jsonl")
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------
# Functions under test
# ----------------------------------------------------------------------------

@dataclass
class Fn:
    key: str
    label: str
    func: str       # the fastten.moments call, as shown in the accuracy table
    call: Callable  # call(M, X, y, U, W, W4) with M = fastten.moments


def fastten_functions(m, k, k4):
    return [
        Fn("t3_iuu", f"T(I,u,u) batch m={m}", "third_moment_iuu(X, y, U)", lambda M, X, y, U, W, W4: M.third_moment_iuu(X, y, U)),
        Fn("s2_dot", "E[y S2] Omega", "second_moment_dot(X, y, U)", lambda M, X, y, U, W, W4: M.second_moment_dot(X, y, U)),
        Fn("t3_uuu", f"T(u,u,u) m={m}", "third_moment_uuu(X, y, U)", lambda M, X, y, U, W, W4: M.third_moment_uuu(X, y, U)),
        Fn("t3_slice_dot", f"T(I,I,theta) Omega m={m}", "third_moment_slice_dot(X, y, U[:, 0], U)",
           lambda M, X, y, U, W, W4: M.third_moment_slice_dot(X, y, U[:, 0], U)),
        Fn("t4_iuuu", f"M4(I,u,u,u) m={m}", "fourth_moment_iuuu(X, y, U)", lambda M, X, y, U, W, W4: M.fourth_moment_iuuu(X, y, U)),
        Fn("t3_projected", f"R = T(W,W,W) k={k}", "third_moment_projected(X, y, W)", lambda M, X, y, U, W, W4: M.third_moment_projected(X, y, W)),
        Fn("t4_projected", f"R4 = M4(W,W,W,W) k={k4}", "fourth_moment_projected(X, y, W[:, :min(k, 8)])",
           lambda M, X, y, U, W, W4: M.fourth_moment_projected(X, y, W4)),
    ]


def _dense_moments(X, y):
    """Dense (1/n) sum_i y_i S_m(x_i) for m = 2, 3, 4 (float64, small d only)."""
    n, d = X.shape
    I = np.eye(d)
    m0 = y.sum() / n
    m1 = np.einsum("i,ia->a", y, X) / n
    m2 = np.einsum("i,ia,ib->ab", y, X, X) / n
    m3 = np.einsum("i,ia,ib,ic->abc", y, X, X, X) / n
    m4 = np.einsum("i,ia,ib,ic,ie->abce", y, X, X, X, X) / n
    M2 = m2 - m0 * I
    M3 = m3 - (np.einsum("a,bc->abc", m1, I) + np.einsum("b,ac->abc", m1, I)
               + np.einsum("c,ab->abc", m1, I))
    M4 = m4.copy()
    for spec in ("ab,ce", "ac,be", "ae,bc", "bc,ae", "be,ac", "ce,ab"):
        M4 -= np.einsum(spec + "->abce", m2, I)
    for spec in ("ab,ce", "ac,be", "ae,bc"):
        M4 += m0 * np.einsum(spec + "->abce", I, I)
    return M2, M3, M4


def references(X, y, U, W, W4):
    """numpy references for every function, in float64."""
    X, y, U, W, W4 = (np.asarray(a, dtype=np.float64) for a in (X, y, U, W, W4))
    n = X.shape[0]
    # T(I,u,u) by the closed formula of the brief:
    # mean(y ((x.u)^2 - |u|^2) x) - 2 mean(y x.u) u, one column per u.
    P = X @ U
    nu = (U * U).sum(axis=0)
    iuu = X.T @ (y[:, None] * (P * P - nu)) / n - 2.0 * ((y @ P) / n) * U
    M2, M3, M4 = _dense_moments(X, y)
    theta = U[:, 0]
    return {
        "t3_iuu": iuu,
        "s2_dot": M2 @ U,
        "t3_uuu": np.einsum("abc,aj,bj,cj->j", M3, U, U, U),
        "t3_slice_dot": np.einsum("abc,c,bj->aj", M3, theta, U),
        "t4_iuuu": np.einsum("abce,bj,cj,ej->aj", M4, U, U, U),
        "t3_projected": np.einsum("abc,ap,bq,cr->pqr", M3, W, W, W),
        "t4_projected": np.einsum("abce,ap,bq,cr,es->pqrs", M4, W4, W4, W4, W4),
    }


def _dispatchers():
    """Every Numba dispatcher of fastten._kernels (for cache statistics)."""
    from fastten._kernels import contractions, projected

    found = {}
    for module in (contractions, projected):
        for name, obj in vars(module).items():
            if hasattr(obj, "stats") and hasattr(obj, "py_func"):
                found[f"{module.__name__.rsplit('.', 1)[1]}.{name}"] = obj
    return found


def _cache_counts(dispatchers):
    hits = misses = 0
    for disp in dispatchers.values():
        stats = disp.stats
        hits += sum(stats.cache_hits.values())
        misses += sum(stats.cache_misses.values())
    return hits, misses


def _make_problem(rng, n, d, m, k, dtype):
    X = T.standard_normal(rng, (n, d), dtype)
    y = T.standard_normal(rng, n, dtype)
    scale = np.asarray(1.0 / math.sqrt(d), dtype=dtype)
    U = T.standard_normal(rng, (d, m), dtype) * scale
    W = T.standard_normal(rng, (d, k), dtype) * scale
    return X, y, U, W


def check_accuracy(fns, dtype):
    """First calls and relative errors on the small problem.

    Returns {key: dict(rel_err, first_call_s, numba)} where numba says whether
    the first call compiled, loaded from the on-disk cache, or neither.
    """
    import fastten.moments as M

    s = SMALL
    X, y, U, W = _make_problem(np.random.default_rng(SEED), s["n"], s["d"], s["m"], s["k"], dtype)
    W4 = W[:, : min(s["k"], K4_MAX)]
    refs = references(X, y, U, W, W4)
    dispatchers = _dispatchers()
    results = {}
    for fn in fns:
        before = _cache_counts(dispatchers)
        first, got = T.timed(lambda: fn.call(M, X, y, U, W, W4))
        after = _cache_counts(dispatchers)
        if after[1] > before[1]:
            how = "compiled"
        elif after[0] > before[0]:
            how = "cache load"
        else:
            how = "none"
        ref = refs[fn.key]
        got = np.asarray(got, dtype=np.float64)
        if got.shape != ref.shape:
            err = float("inf")
        else:
            err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        results[fn.key] = {"rel_err": err, "first_call_s": first, "numba": how}
    return results


def check_threads(fns, d, m, k, k4, dtype):
    """For each function: are the results bitwise equal with 1 BLAS thread and
    with the default count? None per function if that cannot be tested."""
    import fastten.moments as M

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return {fn.key: None for fn in fns}, None
    X, y, U, W = _make_problem(np.random.default_rng(SEED + 1), MEDIUM_N, d, m, k, dtype)
    W4 = W[:, :k4]
    info = T.blas_info()
    default_threads = max((lib["num_threads"] for lib in info), default=1)
    if default_threads < 2:
        return {fn.key: None for fn in fns}, default_threads
    out = {}
    for fn in fns:
        many = np.asarray(fn.call(M, X, y, U, W, W4))
        with threadpool_limits(limits=1, user_api="blas"):
            one = np.asarray(fn.call(M, X, y, U, W, W4))
        out[fn.key] = many.dtype == one.dtype and many.shape == one.shape and many.tobytes() == one.tobytes()
    return out, default_threads


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

def _composite(matmul, zpass):
    """Yardstick 'X @ W + one pass over Z': sum of the two medians."""
    return {
        "warmup_s": matmul["warmup_s"] + zpass["warmup_s"],
        "times_s": None,
        "median_s": matmul["median_s"] + zpass["median_s"],
        "peak_extra_mb": max(v for v in (matmul["peak_extra_mb"], zpass["peak_extra_mb"], 0.0)
                             if v is not None),
        "memory_method": matmul["memory_method"],
        "parts": {"matmul_median_s": matmul["median_s"], "matmul_times_s": matmul["times_s"],
                  "matmul_peak_extra_mb": matmul["peak_extra_mb"],
                  "pass_median_s": zpass["median_s"], "pass_times_s": zpass["times_s"],
                  "pass_peak_extra_mb": zpass["peak_extra_mb"]},
    }


def _pass_over(Z):
    return lambda: Z.sum(axis=0)


def run(args):
    import fastten.moments as M

    t_start = time.perf_counter()
    steal_start = T.cpu_steal_s()
    n, d, m, k, dtype, repeat = args.n, args.d, args.m, args.k, args.dtype, args.repeat
    k4 = min(k, K4_MAX)
    fns = fastten_functions(m, k, k4)
    command = (f"python -m bench kernels --n {n} --d {d} --m {m} --k {k} --repeat {repeat} "
               f"--dtype {dtype}")

    machine = T.machine_info()
    hwm_ok = T.hwm_reset_works()
    startup = startup_costs()

    # 1. Accuracy on a small problem; also the first calls (compilation).
    accuracy = check_accuracy(fns, dtype)
    tol = TOLERANCE[dtype]
    accurate = all(r["rel_err"] <= tol for r in accuracy.values())

    # 2. Same bits on 1 and on all BLAS threads (BLAS libraries are loaded now).
    blas = T.blas_info()
    threads_equal, default_threads = check_threads(fns, d, m, k, k4, dtype)

    # 3. The large problem.
    t_gen, (X, y, U, W) = T.timed(lambda: _make_problem(np.random.default_rng(SEED), n, d, m, k, dtype))
    W4 = np.ascontiguousarray(W[:, :k4])

    results = {}
    results["matmul_U"] = T.measure(lambda: X @ U, repeat)
    P = np.empty((n, m), dtype=X.dtype)
    P.fill(0)  # fault the pages in now, so that the row shows the product alone
    results["matmul_U_out"] = T.measure(lambda: np.matmul(X, U, out=P), repeat)
    del P
    results["pass_X"] = T.measure(lambda: X.sum(axis=0), repeat)

    from fastten._validation import check_samples
    results["validate_X"] = T.measure(lambda: check_samples(X), repeat)

    matmul_W = T.measure(lambda: X @ W, repeat, keep_result=True)
    Z = matmul_W.pop("result")
    pass_Z = T.measure(_pass_over(Z), repeat)
    del Z
    results["matmul_W_pass_Z"] = _composite(matmul_W, pass_Z)

    matmul_W4 = T.measure(lambda: X @ W4, repeat, keep_result=True)
    Z4 = matmul_W4.pop("result")
    pass_Z4 = T.measure(_pass_over(Z4), repeat)
    del Z4
    results["matmul_W4_pass_Z4"] = _composite(matmul_W4, pass_Z4)

    for fn in fns:
        results[fn.key] = T.measure(lambda fn=fn: fn.call(M, X, y, U, W, W4), repeat)
    del X, y, U, W, W4

    # 4. Rows: (key, label, yardstick key).
    rows_spec = [
        ("matmul_U", f"X @ U (d x m = {d} x {m}): yardstick", None),
        ("matmul_U_out", "X @ U into a preallocated output (np.matmul out=)", "matmul_U"),
        ("pass_X", "X.sum(axis=0): one pass over X", "matmul_U"),
        ("validate_X", "input check of X inside each call (check_samples)", "matmul_U"),
    ]
    for fn in fns[:5]:
        rows_spec.append((fn.key, fn.label, "matmul_U"))
    rows_spec += [
        ("matmul_W_pass_Z", f"X @ W + one pass over Z (k={k}): yardstick", "matmul_U"),
        ("t3_projected", fns[5].label, "matmul_W_pass_Z"),
        ("matmul_W4_pass_Z4", f"X @ W + one pass over Z (k={k4}): yardstick", "matmul_U"),
        ("t4_projected", fns[6].label, "matmul_W4_pass_Z4"),
    ]
    labels = {"matmul_U": "X @ U", "matmul_W_pass_Z": f"X @ W + pass Z (k={k})",
              "matmul_W4_pass_Z4": f"X @ W + pass Z (k={k4})"}

    total = time.perf_counter() - t_start
    steal_end = T.cpu_steal_s()
    steal = None if steal_start is None or steal_end is None else steal_end - steal_start
    run_info = {
        "bench": "kernels", "command": command, "n": n, "d": d, "m": m, "k": k, "k4": k4,
        "dtype": dtype, "repeat": repeat, "seed": SEED,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "blas_threads": T.blas_threads(blas), "blas": blas,
        "cpu_steal_s": steal,
        "memory_method": ("VmHWM reset + 1 ms VmRSS sampling" if hwm_ok else "1 ms VmRSS sampling"),
        **machine,
    }

    records, table = [], []
    for key, label, yard in rows_spec:
        r = results[key]
        ratio = r["median_s"] / results[yard]["median_s"] if yard else None
        acc = accuracy.get(key)
        record = {
            **run_info, "name": key, "label": label,
            "median_s": r["median_s"], "times_s": r["times_s"], "warmup_s": r["warmup_s"],
            "yardstick": labels.get(yard), "ratio": ratio, "peak_extra_mb": r["peak_extra_mb"],
        }
        if "parts" in r:
            record.update(r["parts"])
        if acc is not None:
            record.update(first_call_s=acc["first_call_s"], numba_first_call=acc["numba"],
                          rel_err_small=acc["rel_err"], bitwise_equal_1_vs_default_threads=threads_equal[key])
        records.append(record)
        table.append([
            label,
            T.fmt(r["median_s"], ".3f"),
            f"{min(r['times_s']):.3f}-{max(r['times_s']):.3f}" if r["times_s"] else "-",
            labels.get(yard, "-"),
            T.fmt(ratio, ".2f"),
            f"{acc['first_call_s']:.2f} ({acc['numba']})" if acc else "-",
            T.fmt(r["peak_extra_mb"], ".0f"),
        ])
    records.append({**run_info, "name": "run", "label": "whole run", "total_s": total,
                    "generate_s": t_gen, "accurate": accurate, "tolerance": tol})
    records.append({**run_info, "name": "startup", **startup})
    path = T.write_jsonl(Path(args.out) / "kernels.jsonl", records)

    # 5. Report.
    env = machine["env"]
    lines = [
        f"# Moment kernels: n={n}, d={d}, m={m}, k={k} (fourth projected: k={k4}), {dtype}",
        "",
        f"- command: `{command}`",
        f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}",
        f"- software: Python {machine['python']}, numpy {machine['numpy']}, numba {machine['numba']}",
        f"- BLAS threads in effect: {T.blas_threads(blas)}",
    ]
    lines += [f"  - {s}" for s in T.blas_summary(blas)]
    lines += [
        "- environment: " + ", ".join(f"{name}={env[name] if env[name] is not None else '(unset)'}"
                                      for name in T.ENV_VARS),
        f"- X: {n} x {d} {dtype} = {X_bytes(n, d, dtype) / 2**30:.2f} GiB, drawn in {t_gen:.1f} s "
        f"(default_rng(seed={SEED}): X, y, U, W in that order)",
        f"- timing: median of {repeat} runs after one warm-up; peak extra memory = peak RSS during the "
        f"warm-up minus RSS before it ({run_info['memory_method']}), MB = 2^20 bytes",
        "",
        f"## Accuracy (n={SMALL['n']}, d={SMALL['d']}, m={SMALL['m']}, k={SMALL['k']}; "
        f"error = max|fastten - numpy| / max|numpy|, tolerance {tol:g})",
        "",
    ]
    acc_rows = []
    for fn in fns:
        a = accuracy[fn.key]
        eq = threads_equal[fn.key]
        acc_rows.append([fn.func, f"{a['rel_err']:.1e}", "ok" if a["rel_err"] <= tol else "FAIL",
                         "-" if eq is None else ("yes" if eq else "NO")])
    same_bits = (f"Same bits, 1 vs {default_threads} BLAS threads (n={MEDIUM_N})" if default_threads
                 and default_threads > 1 else "Same bits on 1 and more BLAS threads (needs threadpoolctl, >1 thread)")
    lines.append(T.markdown_table(
        ["fastten.moments call", "Rel. error", "Check", same_bits],
        acc_rows, "lrll"))
    lines += [
        "",
        "## Start-up",
        "",
        f"- `import fastten`: {startup['import_s']:.2f} s (median of {len(startup['import_runs_s'])} fresh "
        "processes; compiles nothing)",
        f"- compiling every kernel, float64 and float32, from an empty Numba cache: "
        f"{startup['cold_compile_s']:.1f} s (first calls minus second calls, in a fresh process)",
        "",
        "## Timings",
        "",
        T.markdown_table(["Measurement", "Median (s)", "Range (s)", "Yardstick", "Ratio", "First call (s)",
                          "Peak extra (MB)"],
                         table, "lrrlrlr"),
        "",
        "First call: the first call in this process, on the accuracy problem, so it is Numba compilation",
        "(or loading from Numba's on-disk cache, as noted; 'none' = its kernels were already loaded",
        "by an earlier function) plus a negligible computation.",
        "",
        "Range: fastest and slowest timed run. The yardsticks 'X @ W + one pass over Z' add the",
        "medians of Z = X @ W and of Z.sum(axis=0) (their ranges are in the JSON lines).",
        "",
        f"Results: {path}",
        f"Total run time: {total:.1f} s; CPU time stolen by the hypervisor meanwhile: "
        + ("unknown" if steal is None else f"{steal:.1f} s"),
    ]
    if not accurate:
        lines += ["", "ACCURACY CHECK FAILED: the timings above are of a kernel that gives wrong results."]
    print("\n".join(lines))
    return 0 if accurate else 1


_COLD_SCRIPT = """
import time, warnings
import numpy as np
t0 = time.perf_counter()
import fastten
from fastten import moments as M
from fastten.sketch import TensorSketch
t_import = time.perf_counter() - t0

def everything():
    for dtype in (np.float64, np.float32):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 6)).astype(dtype)
        y = rng.standard_normal(300).astype(dtype)
        U = rng.standard_normal((6, 3)).astype(dtype)
        M.first_moment(X, y); M.second_moment_dot(X, y, U); M.third_moment_iuu(X, y, U)
        M.third_moment_uuu(X, y, U); M.third_moment_slice_dot(X, y, U[:, 0], U)
        M.third_moment_projected(X, y, U); M.fourth_moment_iuuu(X, y, U); M.fourth_moment_projected(X, y, U)
        TensorSketch.from_data(X, y, 64, 2, 0).iuu(U.astype(np.float64))
    TensorSketch.from_dense(np.zeros((3, 3, 3)), 64, 2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastten.decompose(fastten.operators.DataMoment(X.astype(np.float64), y.astype(np.float64)), 2)

t0 = time.perf_counter(); everything(); first = time.perf_counter() - t0
t0 = time.perf_counter(); everything(); second = time.perf_counter() - t0
print(t_import, first, second)
"""


def startup_costs(runs=5):
    """Median `import fastten` time over fresh processes, and the compilation
    of every kernel (both dtypes) from an empty Numba cache."""
    import os
    import statistics
    import subprocess
    import sys
    import tempfile

    imports = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import fastten; "
                              "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
        imports.append(float(out.stdout))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run([sys.executable, "-c", _COLD_SCRIPT], capture_output=True, text=True, check=True,
                             env=env)
    _, first, second = (float(v) for v in out.stdout.split())
    return {"import_s": statistics.median(imports), "import_runs_s": imports,
            "cold_compile_s": first - second}


def X_bytes(n, d, dtype):
    return n * d * np.dtype(dtype).itemsize
