"""Demo: NN-LIFT fits a planted network.

    python -m fastten.demo        (or: fastten demo, python -m fastten demo)

A planted sigmoid network (d=50 inputs, k=10 hidden units, n=10^5 noise-free
samples) is fitted by ``fastten.fit``: moments, decomposition, output layer,
refinement. The demo reports the time of the fit (after a small warm-up fit
that compiles the kernels), its stages, and how well it recovered the
planted network: the worst |cos| between matched fitted and planted weight
vectors, and the test error relative to the variance of the test outputs.

``run`` does the work and returns a record; ``summary`` turns it into lines
of text; only ``main`` (the script) prints.
"""

import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from .datasets import make_planted_network
from .nnlift import fit


def run(n=100_000, d=50, k=10, seed=0, verbose=0):
    """Plant a sigmoid network, fit it, and measure the recovery.

    Returns a dict: the problem (``n``, ``d``, ``k``), ``seconds`` (the fit,
    compilation excluded), ``worst_cos`` (worst |cos| between matched fitted
    and planted first-layer weights), ``relative_test_mse`` (test MSE against
    the noise-free outputs over their variance) and the fitted ``model``.
    ``verbose`` is the timed fit's (``fastten.fit``).
    Warnings of the timed fit reach the caller; the warm-up's are ignored.
    """
    net = make_planted_network(n, d, k, random_state=seed)
    warm = make_planted_network(2_000, 5, 2, random_state=seed)
    with warnings.catch_warnings():  # compiles the kernels outside the timing
        warnings.simplefilter("ignore")
        fit(warm.X, warm.y, 2, random_state=seed)

    start = time.perf_counter()
    model = fit(net.X, net.y, k, random_state=seed, verbose=verbose)
    elapsed = time.perf_counter() - start

    unit = model.A1 / np.linalg.norm(model.A1, axis=0)
    cos = np.abs(unit.T @ (net.A1 / np.linalg.norm(net.A1, axis=0)))
    rows, cols = linear_sum_assignment(-cos)
    mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
    return {"n": n, "d": d, "k": k, "seconds": elapsed, "worst_cos": float(cos[rows, cols].min()),
            "relative_test_mse": float(mse), "model": model}


def summary(result):
    """The lines that describe a ``run`` result."""
    n, d, k, dg = result["n"], result["d"], result["k"], result["model"].diagnostics
    return [
        f"planted sigmoid network: d={d}, k={k}, n={n}, noise-free labels",
        f"fit in {result['seconds']:.2f} s: " + ", ".join(f"{stage} {t:.2f} s" for stage, t in dg["times"].items()
                                                          if stage != "total"),
        f"tensor stage: engine '{dg['engine']}', {len(dg['trusted_components'])} of {k} directions trusted "
        f"from the third moment, {dg['joint_directions']} from the joint second-to-fourth-order "
        f"decomposition, {dg['second_order_directions']} from the second moment alone",
        f"refinement: {dg['refinement_iterations']} Levenberg-Marquardt iterations; "
        f"{sum(dg['data_passes'].values()):.0f} passes over the data in all "
        f"(a pass over a subsample counts as its share of the rows)",
        f"worst matched |cos(fitted a_j, planted a_j)|: {result['worst_cos']:.8f}",
        f"test MSE / Var(test outputs): {result['relative_test_mse']:.2e}",
    ]


def main(n=100_000, d=50, k=10, seed=0):
    for line in summary(run(n, d, k, seed)):
        print(line)


if __name__ == "__main__":
    main()
