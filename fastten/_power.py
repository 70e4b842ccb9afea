"""The robust tensor power method (Anandkumar, Ge, Hsu, Kakade, Telgarsky 2014).

For a symmetric operator close to sum_j lambda_j v_j^(x)3 with orthonormal
v_j: L random restarts, N power iterations theta <- T(I, theta, theta) / |.|
(all restarts in one batched contraction), the restart with the largest
|T(theta, theta, theta)| wins, N more iterations refine it, and the found
component is deflated implicitly before the next one is sought.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class PowerResult:
    weights: np.ndarray      # (r,), >= 0 (the sign is carried by the vector)
    vectors: np.ndarray      # (dim, r), unit columns
    history: list            # per component: step sizes |theta_t - theta_{t-1}| of the winner
    converged: np.ndarray    # (r,) bool
    n_iter: int              # power iterations run, all components and restarts counted once per batch


def _normalise(Y, previous=None):
    """Unit columns of Y; a zero column (T(I, theta, theta) = 0) keeps the
    previous vector, so no iterate ever becomes zero or NaN."""
    norms = np.linalg.norm(Y, axis=0)
    out = Y / np.where(norms > 0, norms, 1.0)
    if previous is not None and np.any(norms == 0):
        out[:, norms == 0] = previous[:, norms == 0]
    return out, norms


def power_method(op, rank, *, n_restarts, n_iter, tol, rng):
    """Extract `rank` components of `op` one by one, with implicit deflation."""
    dim = op.dim
    weights = np.empty(rank)
    vectors = np.empty((dim, rank))
    history, converged = [], np.zeros(rank, dtype=bool)
    current = op
    total = 0
    for j in range(rank):
        Theta, _ = _normalise(rng.standard_normal((dim, n_restarts)))
        for _ in range(n_iter):
            Theta, _ = _normalise(current.iuu(Theta), Theta)
        total += n_iter
        best = int(np.argmax(np.abs(current.uuu(Theta))))
        theta = Theta[:, best:best + 1]
        steps = []
        for _ in range(n_iter):
            new, norm = _normalise(current.iuu(theta), theta)
            # Odd order: theta and -theta are the same component; measure the
            # step up to that sign.
            step = min(np.linalg.norm(new - theta), np.linalg.norm(new + theta))
            steps.append(float(step))
            theta = new
            total += 1
            if step <= tol or norm[0] == 0:
                break
        converged[j] = steps[-1] <= tol
        lam = float(current.uuu(theta)[0])
        if lam < 0:
            lam, theta = -lam, -theta
        weights[j], vectors[:, j] = lam, theta[:, 0]
        history.append(steps)
        current = current.deflated([lam], theta)
    return PowerResult(weights, vectors, history, converged, total)


def polish_in_place(op, weights, vectors, n_sweeps, tol=0.0):
    """Power sweeps in the operator's full dimension, all components at once.

    Each component j takes the step theta_j <- T_j(I, theta_j, theta_j) /|.|
    on T_j = T - sum_{l != j} w_l v_l^(x)3 (the others deflated implicitly),
    one batched contraction per sweep, at most n_sweeps of them, stopping
    once no component moves by more than tol. Started from a projected
    solution it removes the error of the projection; for orthogonal
    components only. Returns (weights, vectors, step sizes per sweep).
    """
    V, w = vectors.copy(), weights.copy()
    steps = []
    for _ in range(n_sweeps):
        Y = op.iuu(V)
        C = V.T @ V
        Y -= V @ (w[:, None] * C * C) - V * w   # the l != j deflation terms
        w = np.einsum("aj,aj->j", V, Y)          # deflated T(v_j, v_j, v_j)
        new, _ = _normalise(Y * np.where(w < 0, -1.0, 1.0), V)
        steps.append(float(np.max(np.linalg.norm(new - V, axis=0))))
        V = new  # oriented like the previous V; the weight keeps its sign
        if steps[-1] <= tol:
            break
    return w, V, steps
