"""Demo: the tensor stage of NN-LIFT on a planted network.

    python -m fastten.demo

Until ``fastten.fit`` lands (issue #4) this shows the stage it starts from:
the implicit third moment M3 = E[y S3(x)] of a planted sigmoid network,
never formed as a d^3 array, is decomposed, and its components come back as
the first-layer weight directions a_j with weights
lambda_j = a2_j E[sigma'''(a_j.x + b1_j)] (computed here by quadrature).
"""

import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from .activations import gaussian_expectation
from .datasets import make_planted_network
from .decomposition import decompose
from .operators import DataMoment


def main(n=1_000_000, d=20, k=5, seed=0):
    net = make_planted_network(n, d, k, random_state=seed)
    y = net.y - net.y.mean()
    lam = net.a2 * gaussian_expectation("sigmoid", 3, net.b1, np.linalg.norm(net.A1, axis=0))

    with warnings.catch_warnings():  # a first call on a few rows, to compile outside the timing
        warnings.simplefilter("ignore")
        decompose(DataMoment(net.X[:1000], y[:1000]), k, random_state=seed)
    op = DataMoment(net.X, y)
    start = time.perf_counter()
    dec = decompose(op, k, random_state=seed)
    elapsed = time.perf_counter() - start

    cos = net.A1.T @ dec.factors
    rows, cols = linear_sum_assignment(-np.abs(cos))
    print(f"planted sigmoid network: d={d}, k={k}, n={n}")
    print(f"decomposed the implicit third moment in {elapsed:.3f} s ({op.passes} passes over the data, "
          f"engine '{dec.method}')")
    print(" j   lambda_j (quadrature)   weight found   |cos(a_j, factor)|")
    for j, c in zip(rows, cols):
        sign = np.sign(cos[j, c])  # (w, v) and (-w, -v) are the same component
        print(f"{j:2d}   {lam[j]:+.4f}                 {sign * dec.weights[c]:+.4f}        {abs(cos[j, c]):.3f}")
    print("The error of this stage falls like n^-1/2 (try main(n=200_000)); the fit refines it (issue #4).")


if __name__ == "__main__":
    main()
