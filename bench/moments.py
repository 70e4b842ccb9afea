"""Control variates: the error of the moments against n, estimator by estimator.

``python -m bench moments`` draws planted sigmoid networks (d=50, k=10 by
default, x ~ N(0, I), noise-free and with label noise 0.1) and, for each n,
estimates the cross-moments M2, M3, M4 projected on an orthonormal basis W
of the planted directions plus 5 random ones, with four label estimators:
the centred labels, the linear control variate, the quadratic one (M2 from
its residual plus the fitted quadratic's Hessian, ``fastten._control``) and
the quadratic one cross-fitted on two halves. The error is
|M(W, ...) - E[y S_m](W, ...)|_F / |E[y S_m](W, ...)|_F against the exact
population moment sum_j a2_j E[sigma^(m)(a_j . x + b1_j)] a_j^(x)m
(one-dimensional Gaussian integrals). Beside it: Var(r) / Var(y) of the
residual of orders >= 3, and the tensor stage alone (``fit(...,
refine=False)`` with that ``control_variate`` and ``cross_fit``): worst
matched |cos| with the planted A1. The samples of a seed are nested (the
first n rows of one draw).
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from fastten import fit
from fastten._control import control_labels
from fastten.activations import gaussian_expectation
from fastten.datasets import make_planted_network
from fastten.moments import fourth_moment_projected, second_moment_dot, third_moment_projected
from fastten.operators import DataMoment

from . import _timing as T
from ._peers import worst_cos

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
N_VALUES = (10_000, 30_000, 100_000, 300_000)
NOISES = (0.0, 0.1)
# name: (fit's control_variate, cross_fit)
ESTIMATORS = {"centred": ("none", False), "linear": ("linear", False), "quadratic": ("quadratic", False),
              "quadratic, cross-fitted": ("quadratic", True)}
EXTRA = 5  # random directions added to the planted span in W


def add_parser(subparsers):
    p = subparsers.add_parser("moments", help="moment error against n for each control variate (issue #10)",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds per noise level")
    p.add_argument("--n", type=int, nargs="+", default=list(N_VALUES), help="sample sizes")
    p.add_argument("--d", type=int, default=50, help="input dimension")
    p.add_argument("--k", type=int, default=10, help="hidden units")
    p.add_argument("--noise", type=float, nargs="+", default=list(NOISES), help="label noise levels")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    p.set_defaults(func=run)


def population_projected(net, W):
    """The exact E[y S_m](W, ..., W) for m = 2, 3, 4 of a planted network
    with x ~ N(0, I) (Stein's identity)."""
    P = W.T @ net.A1
    norms = np.linalg.norm(net.A1, axis=0)
    lam = {m: net.a2 * gaussian_expectation(net.activation, m, net.b1, norms) for m in (2, 3, 4)}
    return (np.einsum("j,aj,bj->ab", lam[2], P, P), np.einsum("j,aj,bj,cj->abc", lam[3], P, P, P),
            np.einsum("j,aj,bj,cj,ej->abce", lam[4], P, P, P, P))


def estimated_projected(X, labels, W):
    """(M2, M3, M4) projected on W from the control-variate labels: orders
    3 and 4 from the residual of orders >= 3, order 2 from it plus the
    quadratic's Hessian (nothing for the other estimators)."""
    M2 = W.T @ (second_moment_dot(X, labels.higher, W) + labels.second_moment_correction(W))
    return M2, third_moment_projected(X, labels.higher, W), fourth_moment_projected(X, labels.higher, W)


def _one(net, n, noise, seed, name, W, reference, k):
    X, y = net.X[:n], net.y[:n]
    yc = y - y.mean()
    kind, cross = ESTIMATORS[name]
    labels = control_labels(DataMoment(X, yc), X, yc, kind, cross, k, np.random.default_rng(seed))
    errors = [float(np.linalg.norm(M - R) / np.linalg.norm(R))
              for M, R in zip(estimated_projected(X, labels, W), reference)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tensor stage alone warns about units it cannot confirm
        model = fit(X, y, k, refine=False, control_variate=kind, cross_fit=cross, random_state=seed)
    return {"n": n, "noise": noise, "seed": seed, "estimator": name, "d": X.shape[1], "k": k,
            "variance_ratio": float(np.var(labels.higher) / np.var(yc)), "error_M2": errors[0],
            "error_M3": errors[1], "error_M4": errors[2], "worst_cos": worst_cos(net.A1, model.A1)}


def _summary_rows(records, ns, noises):
    rows = []
    for noise in noises:
        for n in ns:
            for name in ESTIMATORS:
                mine = [r for r in records if r["n"] == n and r["noise"] == noise and r["estimator"] == name]
                if not mine:
                    continue
                med = {key: float(np.median([r[key] for r in mine]))
                       for key in ("variance_ratio", "error_M2", "error_M3", "error_M4", "worst_cos")}
                cos = [r["worst_cos"] for r in mine]
                rows.append([f"{noise:g}", f"{n:.0e}".replace("e+0", "e"), name, f"{med['variance_ratio']:.4f}",
                             f"{med['error_M2']:.3f}", f"{med['error_M3']:.3f}", f"{med['error_M4']:.3f}",
                             f"{med['worst_cos']:.2f} ({min(cos):.2f}-{max(cos):.2f})"])
    return rows


HEADERS = ["noise", "n", "labels", "Var(r)/Var(y)", "M2 error", "M3 error", "M4 error",
           "tensor stage worst cos: median (range)"]
ALIGN = "lrlrrrrl"


def run(args):
    if args.seeds < 1 or min(args.n) < 100 or args.k < 1 or args.d < args.k + EXTRA:
        raise SystemExit("python -m bench moments: error: expected --seeds >= 1, every --n >= 100 and "
                         f"--d >= --k + {EXTRA}")
    warm = make_planted_network(3_000, 6, 2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(warm.X, warm.y, 2, random_state=0)  # compiles the kernels
    ns = sorted(args.n)
    records = []
    for noise in args.noise:
        for seed in range(args.seeds):
            net = make_planted_network(ns[-1], args.d, args.k, noise=noise, n_test=10, random_state=seed)
            rng = np.random.default_rng(1_000 + seed)
            W = np.linalg.qr(np.hstack([net.A1, rng.standard_normal((args.d, EXTRA))]))[0]
            reference = population_projected(net, W)
            for n in ns:
                for name in ESTIMATORS:
                    records.append(_one(net, n, noise, seed, name, W, reference, args.k))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = "\n".join([
        "# Moment error against n, by control variate (issue #10)", "",
        f"`python -m bench moments --seeds {args.seeds} --n {' '.join(map(str, ns))} --d {args.d} --k {args.k}`; "
        f"sigmoid, median over seeds; error / signal of the projected moments; {T.cpu_model()}", "",
        T.markdown_table(HEADERS, _summary_rows(records, ns, args.noise), ALIGN)]) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    T.write_jsonl(args.out / f"moments-{stamp}.jsonl", records)
    (args.out / f"moments-{stamp}.md").write_text(text)
    print(text)
    return 0
