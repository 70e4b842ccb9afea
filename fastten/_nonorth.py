"""Non-orthogonal symmetric decomposition of a small dense k x k x k tensor.

R ~ sum_j lambda_j v_j^(x)3 with v_j linearly independent but not orthogonal
and lambda_j of either sign: the common case for networks, where no definite
whitening exists (DESIGN 3.3).

1. Jennrich's algorithm: every slice R(I, I, t) = V diag(lambda_j v_j . t) V^T
   shares the factor V, so the eigenvectors of R(I,I,a) R(I,I,b)^{-1} are the
   v_j. Under noise two close eigenvalues can turn into a complex pair; its
   real and imaginary parts replace it (see _real_basis). Several random
   pairs (a, b) are tried, each scored after a short polish.
2. Polish: Levenberg-Marquardt on sum_j b_j^(x)3 = R (which uses every slice
   at once, the aim of simultaneous diagonalisation) with b_j =
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


def _real_basis(vals, vecs):
    """Real unit vectors from an eigendecomposition: a real eigenvector as
    is; a complex-conjugate pair (which noise creates from two close
    eigenvalues) as the real and imaginary parts of one member, which span
    the same real plane. Taking the real part of both would duplicate it."""
    cols, j, k = [], 0, vals.shape[0]
    while j < k:
        v = vecs[:, j]
        if vals[j].imag != 0 and j + 1 < k:  # LAPACK returns a conjugate pair as (j, j + 1)
            cols += [v.real, v.imag]
            j += 2
        else:
            cols.append(v.real)
            j += 1
    V = np.stack(cols[:k], axis=1)
    norms = np.linalg.norm(V, axis=0)
    return V / np.where(norms > 0, norms, 1.0)


def jennrich(R, rng, n_trials=8, n_keep=2, short=5):
    """Initial unit factors V (k, k) and weights.

    Each trial takes two random slices R(I,I,a), R(I,I,b) and the eigenvectors
    of R(I,I,a) R(I,I,b)^{-1}; every trial gets `short` polish iterations,
    and the `n_keep` best by residual are returned for a full polish.
    """
    k = R.shape[0]
    found = []
    for _ in range(n_trials):
        Ma, Mb = R @ rng.standard_normal(k), R @ rng.standard_normal(k)
        # Least squares rather than solve: for a tensor of lower rank than k
        # the slices are singular, and the pseudo-inverse still separates the
        # components it has (the others come back with zero weight).
        try:
            vals, vecs = np.linalg.eig(np.linalg.lstsq(Mb.T, Ma.T, rcond=None)[0].T)
        except np.linalg.LinAlgError:
            continue
        if not (np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs))):
            continue
        V = _real_basis(vals, vecs)
        lam, V, history, _, _ = polish(R, _weights(R, V), V, max_iter=short)
        found.append((history[-1], lam, V))
    if not found:
        raise np.linalg.LinAlgError("every random slice pair was singular")
    found.sort(key=lambda item: item[0])
    return [(lam, V) for _, lam, V in found[:n_keep]]


def polish(R, lam, V, *, max_iter=100, tol=1e-12):
    """Levenberg-Marquardt on sum_j b_j^(x)3 = R.

    Returns (lam, V, history, converged, steps): history is the relative
    residual after each accepted step (starting value first); steps[j] the
    relative step sizes |b_j' - b_j| / |b_j| of component j.
    """
    k, r = V.shape
    B = V * np.cbrt(lam)
    norm_R = max(np.linalg.norm(R), np.finfo(float).tiny)

    def loss(B):
        return 0.5 * np.linalg.norm(np.einsum("aj,bj,cj->abc", B, B, B) - R) ** 2

    f = loss(B)
    mu = 1e-3
    history = [np.sqrt(2 * f) / norm_R]
    steps = [[] for _ in range(r)]
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
            # No descent even with heavy damping: a stationary point to
            # rounding if the gradient vanishes there, else a stall.
            scale = 3 * norm_R * np.linalg.norm(B) ** 2  # bounds |grad| at any B
            converged = np.linalg.norm(g) <= 1e-8 * scale or np.sqrt(2 * f) <= 1e-12 * norm_R
            break
        improvement = (f - f_new) / max(f, np.finfo(float).tiny)
        moved = np.linalg.norm(B_new - B, axis=0) / np.maximum(np.linalg.norm(B, axis=0), np.finfo(float).tiny)
        for j in range(r):
            steps[j].append(float(moved[j]))
        B, f = B_new, f_new
        mu = max(mu / 10, 1e-12)
        history.append(np.sqrt(2 * f) / norm_R)
        if improvement < tol or np.sqrt(2 * f) <= tol * norm_R:
            converged = True
            break
    norms = np.linalg.norm(B, axis=0)
    V = B / np.where(norms > 0, norms, 1.0)
    return norms ** 3, V, history, converged, steps
