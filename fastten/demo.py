"""Demo: the third cross-moment of a planted network reveals its hidden units.

    python -m fastten.demo

Until ``fastten.fit`` lands (issue #4) this shows the foundation it stands
on: the implicit third moment M3 = E[y S3(x)] of a planted sigmoid network,
never formed as a d^3 array, equals sum_j lambda_j a_j^(x)3 up to sampling
error, with lambda_j = a2_j E[sigma'''(a_j.x + b1_j)].
"""

import time

import numpy as np

from .activations import gaussian_expectation
from .datasets import make_planted_network
from .moments import third_moment_iuu, third_moment_projected


def main(n=200_000, d=20, k=5, seed=0):
    net = make_planted_network(n, d, k, random_state=seed)
    y = net.y - net.y.mean()
    lam = net.a2 * gaussian_expectation("sigmoid", 3, net.b1, np.linalg.norm(net.A1, axis=0))

    third_moment_projected(net.X[:10], y[:10], net.A1)  # compile outside the timing
    third_moment_iuu(net.X[:10], y[:10], net.A1)
    start = time.perf_counter()
    R = third_moment_projected(net.X, y, net.A1)
    step = third_moment_iuu(net.X, y, net.A1)  # one power-method step from each a_j
    elapsed = time.perf_counter() - start

    population = np.einsum("j,aj,bj,cj->abc", lam, net.A1, net.A1, net.A1)
    population = np.einsum("abc,ax,by,cz->xyz", population, net.A1, net.A1, net.A1)
    print(f"planted sigmoid network: d={d}, k={k}, n={n}; two moment passes in {elapsed:.3f} s")
    print(f"relative error of M3(A1, A1, A1): "
          f"{np.linalg.norm(R - population) / np.linalg.norm(population):.3f} "
          f"(sampling error shrinks like n^-1/2)")
    print(" j   lambda_j (quadrature)   M3(a_j,a_j,a_j) (data)   cos(M3(I,a_j,a_j), a_j)")
    for j in range(k):
        cos = abs(step[:, j] @ net.A1[:, j]) / np.linalg.norm(step[:, j])
        print(f"{j:2d}   {lam[j]:+.4f}                 {R[j, j, j]:+.4f}                   {cos:.3f}")


if __name__ == "__main__":
    main()
