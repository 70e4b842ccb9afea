"""Demo: NN-LIFT fits a planted network.

    python -m fastten.demo

A planted sigmoid network (d=50 inputs, k=10 hidden units, n=10^5 noise-free
samples) is fitted by ``fastten.fit``: moments, decomposition, output layer,
refinement. The demo prints the time of the fit (after a small warm-up fit
that compiles the kernels), its stages, and how well it recovered the
planted network: the worst |cos| between matched fitted and planted weight
vectors, and the test error relative to the variance of the test outputs.
"""

import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from .datasets import make_planted_network
from .nnlift import fit


def main(n=100_000, d=50, k=10, seed=0):
    net = make_planted_network(n, d, k, random_state=seed)
    warm = make_planted_network(2_000, 5, 2, random_state=seed)
    with warnings.catch_warnings():  # compiles the kernels outside the timing
        warnings.simplefilter("ignore")
        fit(warm.X, warm.y, 2, random_state=seed)

    start = time.perf_counter()
    model = fit(net.X, net.y, k, random_state=seed)
    elapsed = time.perf_counter() - start

    unit = model.A1 / np.linalg.norm(model.A1, axis=0)
    cos = np.abs(unit.T @ (net.A1 / np.linalg.norm(net.A1, axis=0)))
    rows, cols = linear_sum_assignment(-cos)
    mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
    dg = model.diagnostics
    print(f"planted sigmoid network: d={d}, k={k}, n={n}, noise-free labels")
    print(f"fit in {elapsed:.2f} s: " + ", ".join(f"{stage} {t:.2f} s" for stage, t in dg["times"].items()
                                                  if stage != "total"))
    print(f"tensor stage: engine '{dg['engine']}', {len(dg['trusted_components'])} of {k} directions trusted "
          f"from the third moment, {dg['joint_directions']} from the joint second-to-fourth-order "
          f"decomposition, {dg['second_order_directions']} from the second moment alone")
    print(f"refinement: {dg['refinement_iterations']} Levenberg-Marquardt iterations; "
          f"{sum(dg['data_passes'].values()):.0f} passes over the data in all "
          f"(a pass over a subsample counts as its share of the rows)")
    print(f"worst matched |cos(fitted a_j, planted a_j)|: {cos[rows, cols].min():.8f}")
    print(f"test MSE / Var(test outputs): {mse:.2e}")


if __name__ == "__main__":
    main()
