"""Non-orthogonal symmetric decomposition of a small dense k x k x k tensor.

R ~ sum_j lambda_j v_j^(x)3 with v_j linearly independent but not orthogonal
and lambda_j of either sign: the common case for networks, where no definite
whitening exists (DESIGN 3.3).

1. Simultaneous diagonalisation (Jennrich; Kuleshov, Chaganty, Liang 2015):
   every slice R(I, I, t) = V diag(lambda_j v_j . t) V^T shares the factor V,
   so the eigenvectors of R(I,I,a) R(I,I,b)^{-1} are the v_j. The slice
   directions a and b are random combinations of many random slices; several
   trials are scored by the residual of the least-squares weights and the
   best is kept.
2. Polish: Levenberg-Marquardt on sum_j b_j^(x)3 = R with b_j =
   cbrt(lambda_j) v_j (a signed weight has a real cube root, so the model has
   no sign constraint), using the closed-form normal equations
   (J^T J)_{jl} = 3 g^2 I + 6 g b_l b_j^T, g = b_j . b_l.
"""

import numpy as np


def _weights(R, V):
    """Least-squares weights of the unit columns of V: (G lambda = r)."""
    G = (V.T @ V) ** 3
    r = np.einsum("abc,aj,bj,cj->j", R, V, V, V)
    lam, *_ = np.linalg.lstsq(G, r, rcond=None)
    return lam


def _residual(R, lam, V):
    return np.linalg.norm(R - np.einsum("j,aj,bj,cj->abc", lam, V, V, V))


def jennrich(R, rng, n_trials=8, n_slices=None):
    """Initial unit factors V (k, k) and weights from random slice pairs."""
    k = R.shape[0]
    n_slices = n_slices or 2 * k
    best = None
    for _ in range(n_trials):
        thetas = rng.standard_normal((k, n_slices))
        a, b = thetas @ rng.standard_normal(n_slices), thetas @ rng.standard_normal(n_slices)
        Ma, Mb = R @ a, R @ b
        try:
            vals, vecs = np.linalg.eig(np.linalg.solve(Mb.T, Ma.T).T)
        except np.linalg.LinAlgError:
            continue
        V = np.real(vecs)
        norms = np.linalg.norm(V, axis=0)
        if not np.all(np.isfinite(V)) or np.any(norms == 0):
            continue
        V = V / norms
        lam = _weights(R, V)
        res = _residual(R, lam, V)
        if best is None or res < best[0]:
            best = (res, lam, V)
    if best is None:
        raise np.linalg.LinAlgError("every random slice pair was singular")
    return best[1], best[2]


def polish(R, lam, V, *, max_iter=100, tol=1e-12):
    """Levenberg-Marquardt on sum_j b_j^(x)3 = R; returns (lam, V, history, converged)."""
    k, r = V.shape
    B = V * np.cbrt(lam)
    norm_R = max(np.linalg.norm(R), np.finfo(float).tiny)

    def loss(B):
        return 0.5 * np.linalg.norm(np.einsum("aj,bj,cj->abc", B, B, B) - R) ** 2

    f = loss(B)
    mu = 1e-3
    history = [np.sqrt(2 * f) / norm_R]
    converged = False
    for _ in range(max_iter):
        g_dot = B.T @ B                              # (r, r): b_j . b_l
        grad = 3 * (B @ (g_dot ** 2) - np.einsum("abc,bj,cj->aj", R, B, B))
        # JtJ block (j, l) = 3 g^2 I + 6 g b_l b_j^T, assembled as (r*k, r*k).
        JtJ = 3 * np.kron(g_dot ** 2, np.eye(k)).reshape(r, k, r, k)
        JtJ += 6 * np.einsum("jl,al,cj->jalc", g_dot, B, B)
        JtJ = JtJ.reshape(r * k, r * k)
        g = grad.T.reshape(-1)
        diag = np.diag(JtJ).copy()
        while True:
            step = np.linalg.solve(JtJ + mu * np.diag(np.maximum(diag, 1e-12)), -g)
            B_new = B + step.reshape(r, k).T
            f_new = loss(B_new)
            if f_new < f or mu > 1e12:
                break
            mu *= 10
        if f_new >= f:
            converged = True  # no descent possible: at a stationary point to rounding
            break
        improvement = (f - f_new) / max(f, np.finfo(float).tiny)
        B, f = B_new, f_new
        mu = max(mu / 10, 1e-12)
        history.append(np.sqrt(2 * f) / norm_R)
        if improvement < tol or np.sqrt(2 * f) <= tol * norm_R:
            converged = True
            break
    norms = np.linalg.norm(B, axis=0)
    V = B / np.where(norms > 0, norms, 1.0)
    return norms ** 3, V, history, converged
