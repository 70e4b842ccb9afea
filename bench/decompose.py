"""Benchmark of the decomposition engines.

``python -m bench decompose`` runs, in one process:

* dense: a d=100, rank-10 orthogonal tensor with positive weights in [1, 2]
  plus symmetric Gaussian noise whose flattening has spectral norm 0.01,
  decomposed by fastten (orthogonal engine, and the full-dimension power
  method) and by TensorLy's ``symmetric_parafac_power_iteration`` with the
  same restarts (10) and iterations (10), when TensorLy is installed;
* implicit: the third cross-moment of a planted sigmoid network with
  d=2000, k=20, n=10^5 (1.5 GB of data), decomposed through the kernels
  without forming it; time, peak memory beyond the data, data passes, and
  recovery of the planted directions;
* sketch: the sketched power method on the Wang et al. setting (d=200, rank
  10, orthogonal, noise-to-signal 0.01) when ``fastten.sketch`` exists.

Times are medians of --repeat runs after one warm-up (compilation excluded).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import _timing as T

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def add_parser(subparsers):
    p = subparsers.add_parser("decompose", help="decomposition engines against TensorLy, at scale, sketched",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    p.add_argument("--skip-implicit", action="store_true", help="skip the d=2000 implicit-moment scenario")
    p.add_argument("--sketch-dims", type=int, nargs="*", default=[200, 500],
                   help="dimensions of the sketch-versus-exact timing (d^3 doubles each)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for decompose.jsonl")
    p.set_defaults(func=run)


def worst_cos(true_V, est_V):
    C = np.abs(true_V.T @ est_V)
    rows, cols = linear_sum_assignment(-C)
    return float(C[rows, cols].min()), cols


def symmetric_gaussian(d, rng):
    """A symmetric Gaussian d x d x d tensor, built with two d^3 arrays at a time."""
    E = rng.standard_normal((d, d, d))
    S = E.copy()
    for p in [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        S += E.transpose(p)
    return S


def orthogonal_problem(d, k, noise, seed, relative_to="spectral", weights=(1.0, 2.0)):
    """Orthogonal rank-k tensor plus symmetric Gaussian noise, scaled to
    `noise` times 1 in the flattening's spectral norm (relative_to="spectral")
    or to `noise` times the clean tensor's Frobenius norm ("frobenius")."""
    rng = np.random.default_rng(seed)
    V, _ = np.linalg.qr(rng.standard_normal((d, k)))
    w = rng.uniform(*weights, k)
    clean = np.einsum("j,aj,bj,cj->abc", w, V, V, V)
    E = symmetric_gaussian(d, rng)
    if relative_to == "spectral":
        E *= noise / np.linalg.norm(E.reshape(d, d * d), 2)
    else:
        E *= noise * np.linalg.norm(clean) / np.linalg.norm(E)
    E += clean
    return E, clean, w, V


def _accuracy(clean, w, V, weights, factors):
    cos, cols = worst_cos(V, factors)
    rec = np.einsum("j,aj,bj,cj->abc", weights, factors, factors, factors)
    return {"worst_cos": cos,
            "max_weight_rel_err": float(np.max(np.abs(np.abs(weights[cols]) - w) / w)),
            "reconstruction_rel_err": float(np.linalg.norm(rec - clean) / np.linalg.norm(clean))}


def dense_scenario(repeat):
    from fastten.decomposition import decompose

    d, k, noise, restarts, iters = 100, 10, 0.01, 10, 10
    T_noisy, clean, w, V = orthogonal_problem(d, k, noise, seed=0)
    runs = {
        "fastten orthogonal": lambda: decompose(T_noisy, k, method="orthogonal", n_restarts=restarts,
                                                n_iter=iters, tol=0.0, random_state=0),
        "fastten power (full dimension)": lambda: decompose(T_noisy, k, method="power", n_restarts=restarts,
                                                            n_iter=iters, tol=0.0, random_state=0),
    }
    try:
        import tensorly as tl
        from tensorly.decomposition import symmetric_parafac_power_iteration

        tl.set_backend("numpy")
        runs["tensorly symmetric_parafac_power_iteration"] = lambda: symmetric_parafac_power_iteration(
            tl.tensor(T_noisy), k, n_repeat=restarts, n_iteration=iters)
    except ImportError:
        print("- TensorLy is not installed: `python -m pip install -e '.[bench]'` adds it; skipped.")
    rows, records = [], []
    for name, fn in runs.items():
        with warnings.catch_warnings():
            # tol=0 fixes the iteration count to TensorLy's; the resulting
            # ConvergenceWarning says only that.
            warnings.simplefilter("ignore")
            m = T.measure(fn, repeat, keep_result=True)
        out = m.pop("result")
        weights, factors = (out.weights, out.factors) if hasattr(out, "weights") else (np.asarray(out[0]), np.asarray(out[1]))
        acc = _accuracy(clean, w, V, weights, factors)
        records.append({"bench": "decompose", "scenario": "dense", "method": name, "d": d, "k": k,
                        "noise": noise, "n_restarts": restarts, "n_iter": iters, **m, **acc})
        rows.append([name, T.fmt(m["median_s"], ".4f"), f"{acc['worst_cos']:.6f}",
                     f"{acc['max_weight_rel_err']:.2e}", f"{acc['reconstruction_rel_err']:.2e}",
                     T.fmt(m["peak_extra_mb"], ".0f")])
    base = {r["method"]: r["median_s"] for r in records}
    tly = base.get("tensorly symmetric_parafac_power_iteration")
    for row, rec in zip(rows, records):
        rec["speedup_vs_tensorly"] = tly / rec["median_s"] if tly else None
        row.insert(2, f"{tly / rec['median_s']:.1f}x" if tly else "-")
    print(f"\n## Dense: d={d}, rank {k}, orthogonal, weights in [1, 2], noise {noise} "
          f"(spectral norm of the flattening); {restarts} restarts, {iters} iterations\n")
    print(T.markdown_table(["method", "median (s)", "speed-up vs TensorLy", "worst |cos|", "max weight err",
                            "rel. reconstruction err", "peak extra (MB)"], rows, "lrrrrrr"))
    return records


def implicit_scenario(repeat):
    from fastten.datasets import make_planted_network
    from fastten.decomposition import decompose
    from fastten.operators import DataMoment

    n, d, k = 100_000, 2000, 20
    net = make_planted_network(n, d, k, n_test=1, random_state=0)
    y = net.y - net.y.mean()
    with warnings.catch_warnings():  # a first call on 500 rows compiles outside the timing
        warnings.simplefilter("ignore")
        decompose(DataMoment(net.X[:500], y[:500]), k, random_state=0)
    state = {}

    def run_once():
        op = DataMoment(net.X, y)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dec = decompose(op, k, random_state=0)
        state.update(passes=op.passes, warnings=[str(c.message) for c in caught])
        return dec

    m = T.measure(run_once, repeat, keep_result=True)
    dec = m.pop("result")
    cos, _ = worst_cos(net.A1, dec.factors)
    C = np.abs(net.A1.T @ dec.factors)
    r, c = linear_sum_assignment(-C)
    record = {"bench": "decompose", "scenario": "implicit", "n": n, "d": d, "k": k,
              "data_mb": net.X.nbytes / 2**20, **m, "passes": state["passes"], "worst_cos": cos,
              "median_cos": float(np.median(C[r, c])), "residual": dec.residual, "warnings": state["warnings"]}
    print(f"\n## Implicit data moment: planted sigmoid network, n={n}, d={d}, k={k} "
          f"(X is {record['data_mb']:.0f} MB; a dense d^3 tensor would be {d**3 * 8 / 2**30:.0f} GB)\n")
    print(T.markdown_table(["median (s)", "peak extra (MB)", "data passes", "worst |cos|", "median |cos|",
                            "probe residual"],
                           [[T.fmt(m["median_s"], ".2f"), T.fmt(m["peak_extra_mb"], ".0f"), state["passes"],
                             f"{cos:.3f}", f"{record['median_cos']:.3f}", f"{dec.residual:.3f}"]], "rrrrrr"))
    for message in state["warnings"]:
        print(f"- warning: {message}")
    return [record]


def sketch_scenario(dims):
    """Wang et al.'s synthetic setting: d=200, rank 10, orthogonal, unit
    weights, noise-to-signal 0.01 in Frobenius norm; residual against b, and
    time against the exact engines at each d in `dims`."""
    from fastten.decomposition import decompose

    k, B, restarts, iters = 10, 20, 10, 30
    records = []
    print(f"\n## Sketched power method: Wang et al. setting (rank {k}, orthogonal, unit weights, "
          f"noise-to-signal 0.01 in Frobenius norm), B = {B}, {restarts} restarts, {iters} iterations\n")
    print("Residual = |T_hat - T_clean|_F / |T_clean|_F.\n")

    def solve(tensor, method, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # iteration limits are part of the setting
            return T.timed(lambda: decompose(tensor, k, method=method, n_restarts=restarts, n_iter=iters,
                                             random_state=0, **kw))

    d = 200
    T_noisy, clean, w, V = orthogonal_problem(d, k, 0.01, seed=1, relative_to="frobenius", weights=(1.0, 1.0))
    norm = np.linalg.norm(clean)
    exact = {}
    for method in ("power", "orthogonal"):
        seconds, dec = solve(T_noisy, method)
        exact[method] = np.linalg.norm(dec.to_dense() - clean) / norm
        records.append({"bench": "decompose", "scenario": "sketch_curve", "d": d, "method": method,
                        "residual": exact[method], "seconds": seconds, "worst_cos": worst_cos(V, dec.factors)[0]})
    rows = [[f"exact: {m}", "-", f"{exact[m]:.4f}", f"{records[i]['worst_cos']:.5f}", f"{records[i]['seconds']:.2f}"]
            for i, m in enumerate(("power", "orthogonal"))]
    smallest = None
    for log_b in range(6, 15):
        b = 2 ** log_b
        seconds, dec = solve(T_noisy, "sketch", sketch_size=b, n_sketches=B)
        res = np.linalg.norm(dec.to_dense() - clean) / norm
        cos = worst_cos(V, dec.factors)[0]
        records.append({"bench": "decompose", "scenario": "sketch_curve", "d": d, "method": "sketch",
                        "b": b, "B": B, "residual": res, "seconds": seconds, "worst_cos": cos})
        rows.append([f"sketch b=2^{log_b}", b, f"{res:.4f}", f"{cos:.5f}", f"{seconds:.2f}"])
        if smallest is None and res <= 1.1 * exact["power"]:
            smallest = b
    print(T.markdown_table(["engine", "b", "residual", "worst |cos|", "time (s)"], rows, "lrrrr"))
    print(f"\nSmallest b with residual within 10% of the exact power method's: {smallest}")
    records.append({"bench": "decompose", "scenario": "sketch_smallest_b", "d": d, "b": smallest})

    rows = []
    for d in dims:
        T_noisy, clean, w, V = orthogonal_problem(d, k, 0.01, seed=2, relative_to="frobenius", weights=(1.0, 1.0))
        norm = np.linalg.norm(clean)
        for method, kw in [("power", {}), ("orthogonal", {}), ("sketch", {"sketch_size": 2**11, "n_sketches": B})]:
            seconds, dec = solve(T_noisy, method, **kw)
            res = np.linalg.norm(dec.to_dense() - clean) / norm
            rows.append([d, method, f"{seconds:.2f}", f"{res:.4f}"])
            records.append({"bench": "decompose", "scenario": "sketch_timing", "d": d, "method": method,
                            "seconds": seconds, "residual": res, **kw})
        del T_noisy, clean
    print("\nTime against dimension (sketch: b = 2^11, B = 20, sketch built from the dense tensor, "
          "included in its time; one run each, after the runs above compiled everything):\n")
    print(T.markdown_table(["d", "engine", "time (s)", "residual"], rows, "rlrr"))
    return records


def run(args):
    t0 = time.perf_counter()
    machine = T.machine_info()
    print(f"# Decomposition engines\n\n- command: `python -m bench decompose --repeat {args.repeat}`"
          f"\n- machine: {machine.get('cpu_model')}, os.cpu_count() = {machine.get('cpu_count')}")
    records = dense_scenario(args.repeat)
    if not args.skip_implicit:
        records += implicit_scenario(max(1, min(args.repeat, 3)))
    records += sketch_scenario(args.sketch_dims)
    path = T.write_jsonl(args.out / "decompose.jsonl", records)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s. Results: {path}")
    return 0
