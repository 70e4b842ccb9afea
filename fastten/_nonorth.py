"""Non-orthogonal symmetric decomposition: sum_j lambda_j v_j^(x)3.

R ~ sum_j lambda_j v_j^(x)3 with v_j linearly independent but not orthogonal
and lambda_j of either sign: the common case for networks, where no definite
whitening exists (DESIGN 3.3).

1. Jennrich's algorithm: every slice R(I, I, t) = V diag(lambda_j v_j . t) V^T
   shares the factor V, so the eigenvectors of R(I,I,a) R(I,I,b)^{-1} are the
   v_j. Under noise two close eigenvalues can turn into a complex pair; its
   real and imaginary parts replace it (see _real_basis). Several random
   pairs (a, b) are tried, each scored after a short polish. Exact without
   noise, but fragile with it when the weights span orders of magnitude:
   the inverse slice carries the weak components' noise into every
   eigenvector (at k = d = 20, weights g^2, entry noise 1e-3, its factors
   are off by 0.6 in median).
2. Growth (`grow`): components added one at a time, each the best rank-one
   fit of what the others leave (batched power iterations with restarts),
   every addition followed by a short polish of all of them. Strong
   components are placed first, where the noise cannot hide them, and the
   polish never has to pull two columns apart.
3. Polish (`polish`): Levenberg-Marquardt on sum_j b_j^(x)3 = R (which uses
   every slice at once, the aim of simultaneous diagonalisation) with b_j =
   cbrt(lambda_j) v_j (a signed weight has a real cube root, so the model has
   no sign constraint), using the closed-form normal equations
   (J^T J)_{jl} = 3 g^2 I + 6 g b_l b_j^T, g = b_j . b_l. Started from a
   poor Jennrich trial it can end in a spurious minimum (two nearly
   parallel columns with large opposite weights standing in for one
   component, and a weak component missed); `solve` therefore polishes the
   growth and the best Jennrich trials, keeps the lowest residual, and
   `repair_degenerate` merges such clusters of columns and seeds the freed
   ones beside the others.
4. `polish_operator`: the same Levenberg-Marquardt in the operator's own
   dimension d, through contractions only (one T(I, b, b) per trial step):
   the normal equations split into span(B), an r^2 x r^2 system, and its
   orthogonal complement, where they are diagonal in d. It removes what the
   projection to a subspace lost.
5. joint_decompose: the same factors from M2 = sum_j mu_j v_j v_j^T and R3
   (optionally R4) at once, for units that one of the moments cannot see
   (Jennrich on the pencil of all their slices, then Levenberg-Marquardt on
   the noise-scaled joint residual); see the comment above it.
"""

import itertools
import math

import numpy as np
import scipy.linalg


def _pairs(V):
    """The columnwise Kronecker products v_j (x) v_j, as (k^2, r)."""
    k, r = V.shape
    return (V[:, None, :] * V[None, :, :]).reshape(k * k, r)


def _iuu(R, V):
    """R(I, v_j, v_j) for every column, as (k, r): one matrix product."""
    k = R.shape[0]
    return R.reshape(k, k * k) @ _pairs(V)


def _cube(lam, V):
    """sum_j lam_j v_j^(x)3 as (k, k, k): one matrix product."""
    k = V.shape[0]
    return ((V * lam) @ _pairs(V).T).reshape(k, k, k)


def _weights(R, V):
    """Least-squares weights of the unit columns of V: (G lambda = r)."""
    G = (V.T @ V) ** 3
    r = np.einsum("aj,aj->j", V, _iuu(R, V))
    lam, *_ = np.linalg.lstsq(G, r, rcond=None)
    return lam


def _residual(R, lam, V):
    return np.linalg.norm(R - _cube(lam, V))


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


def _normal_equations(B):
    """J^T J of the model sum_j b_j^(x)3 at B (k, r), as (r k, r k), columns
    of B contiguous: block (j, l) = 3 g_jl^2 I + 6 g_jl b_l b_j^T."""
    k, r = B.shape
    g_dot = B.T @ B
    JtJ = (6 * g_dot)[:, None, :, None] * B[None, :, :, None] * B.T[:, None, None, :]
    diag = np.arange(k)
    JtJ[:, diag, :, diag] += 3 * g_dot ** 2
    return JtJ.reshape(r * k, r * k)


def _damped_solve(A, damping, rhs):
    """(A + damping) x = rhs for symmetric positive semi-definite A and a
    positive diagonal damping (a vector): Cholesky, least squares if that fails."""
    M = A + np.diag(damping)
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(M, check_finite=False), rhs, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(M, rhs, rcond=None)[0]


def polish(R, lam, V, *, max_iter=100, tol=1e-12):
    """Levenberg-Marquardt on sum_j b_j^(x)3 = R.

    Stops when an accepted step lowers the loss by less than tol times
    itself, or the relative residual falls below tol. Returns (lam, V,
    history, converged, steps): history is the relative residual after each
    accepted step (starting value first); steps[j] the relative step sizes
    |b_j' - b_j| / |b_j| of component j.
    """
    k, r = V.shape
    B = V * np.cbrt(lam)
    norm_R = max(np.linalg.norm(R), np.finfo(float).tiny)

    def loss(B):
        return 0.5 * np.linalg.norm(_cube(np.ones(r), B) - R) ** 2

    f = loss(B)
    mu = 1e-3
    history = [np.sqrt(2 * f) / norm_R]
    steps = [[] for _ in range(r)]
    converged = False
    for _ in range(max_iter):
        grad = 3 * (B @ ((B.T @ B) ** 2) - _iuu(R, B))
        JtJ = _normal_equations(B)
        g = grad.T.reshape(-1)
        diag = np.maximum(np.diag(JtJ), 1e-12)
        while True:
            step = _damped_solve(JtJ, mu * diag, -g)
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


def _rank_one(E, rng, n_restarts, n_iter, start=None):
    """(lambda, u): the unit u with the largest |E(u, u, u)| among batched
    power iterations u <- E(I, u, u) / |.| from n_restarts random starts
    (the first replaced by `start` when given)."""
    m = E.shape[0]
    U = rng.standard_normal((m, n_restarts))
    if start is not None:
        U[:, 0] = start
    U /= np.linalg.norm(U, axis=0)
    for _ in range(n_iter):
        Y = _iuu(E, U)
        norms = np.linalg.norm(Y, axis=0)
        U = np.where(norms > 0, Y / np.where(norms > 0, norms, 1.0), U)
    values = np.einsum("aj,aj->j", U, _iuu(E, U))
    best = int(np.argmax(np.abs(values)))
    return float(values[best]), U[:, best]


def grow(R, rank, rng, *, n_restarts=10, n_iter=20, stage_iter=20, tol=1e-8):
    """Initial (lam, V) by greedy growth: for r = 1..rank, the best rank-one
    fit of R minus the current r - 1 components joins them, and all r get up
    to `stage_iter` polish iterations (stopping at the relative loss
    decrease `tol`). Costs about rank * stage_iter Levenberg-Marquardt steps
    of growing size."""
    m = R.shape[0]
    lam, V = np.zeros(0), np.zeros((m, 0))
    for r in range(rank):
        E = R - _cube(lam, V)
        value, u = _rank_one(E, rng, n_restarts, n_iter)
        lam, V = np.append(lam, value), np.hstack([V, u[:, None]])
        if r:
            lam, V, *_ = polish(R, lam, V, max_iter=stage_iter, tol=tol)
    return lam, V


def _rank_one_of_rest(R, lam, V, rng, n_restarts, n_iter):
    """(lambda, u): the best rank-one fit of R - sum_j lam_j v_j^(x)3."""
    return _rank_one(R - _cube(lam, V), rng, n_restarts, n_iter)


def _missing_one(R, lam, V, rng, n_restarts, n_iter):
    """(lambda, u): one more component for R beside the columns of V (m, r).

    Contracting the residual E = R - sum_j lam_j v_j^(x)3 with a vector z
    orthogonal to every v_j removes their errors of fit: with the missing
    component c u^(x)3, E(I, z, z) = c (u . z)^2 u + noise, a matrix-sized
    detection, far more sensitive than a rank-one fit of the whole residual.
    z is the best rank-one direction of E restricted to the orthogonal
    complement Z of V (of dimension m - r; when that is 1, Z itself).
    """
    m, r = V.shape
    E = R - _cube(lam, V)
    Z = np.linalg.qr(np.hstack([V, rng.standard_normal((m, m - r))]))[0][:, r:]
    if Z.shape[1] == 1:
        z = Z[:, 0]
    else:
        z = Z @ _rank_one(np.einsum("abc,ax,by,cz->xyz", E, Z, Z, Z, optimize=True), rng, n_restarts, n_iter)[1]
    u = _iuu(E, z[:, None])[:, 0]
    norm = np.linalg.norm(u)
    if norm == 0:
        return _rank_one(E, rng, n_restarts, n_iter)
    u /= norm
    return float(u @ _iuu(E, u[:, None])[:, 0]), u


def repair_degenerate(R, lam, V, rng, *, max_iter=300, tol=1e-12, coherence=0.95, n_restarts=10, n_iter=20):
    """Undo the polish's spurious minimum of nearly parallel columns (|cos| >
    coherence) standing in for one component, often with large weights of
    opposite sign ("diverging components"), while other components go
    missing: the cluster of such columns is replaced by the best rank-one fit
    of its sum, each freed column by a component found beside the others
    (`_missing_one`, or the best rank-one fit of what they leave; both are
    tried), and the result is polished; it is kept when its residual is
    lower by a relative 1e-6. Repeated while it helps, at most once per
    column. Returns the accepted polish's (lam, V, history, converged,
    steps), or None when nothing was repaired.
    """
    r = V.shape[1]
    out, tried = None, set()
    for _ in range(r):
        G = np.abs(V.T @ V) - np.eye(r)
        i, j = np.unravel_index(np.argmax(G), G.shape)
        if G[i, j] <= coherence or (i, j) in tried:
            break
        tried.add((i, j))
        cluster, frontier = {i}, [i]
        while frontier:
            c = frontier.pop()
            for n in np.flatnonzero(G[c] > coherence):
                if n not in cluster:
                    cluster.add(n)
                    frontier.append(n)
        freed = sorted(cluster - {i})
        members = [i] + freed
        merged = _rank_one(_cube(lam[members], V[:, members]), rng, 1, n_iter, start=V[:, i])
        trials = []
        for seed_column in (_missing_one, _rank_one_of_rest):
            lam_new, V_new = lam.copy(), V.copy()
            lam_new[i], V_new[:, i] = merged
            placed = [c for c in range(r) if c not in freed]
            for c in freed:
                lam_new[c], V_new[:, c] = seed_column(R, lam_new[placed], V_new[:, placed], rng, n_restarts, n_iter)
                placed.append(c)
            trials.append(polish(R, lam_new, V_new, max_iter=max_iter, tol=tol))
        trial = min(trials, key=lambda item: item[2][-1])
        current = _residual(R, lam, V) / max(np.linalg.norm(R), np.finfo(float).tiny)
        if trial[2][-1] < (1 - 1e-6) * current:
            lam, V = trial[0], trial[1]
            out = trial
            tried = set()
    return out


# Relative residual of an exact decomposition (rounding only).
EXACT_RESIDUAL = 1e-10


def solve(R, rank, rng, *, Q=None, small=None, n_trials=10, max_iter=300, tol=1e-12, screen_iter=30):
    """Non-orthogonal rank-`rank` decomposition of the small dense R (m, m, m).

    Candidates: the n_trials Jennrich trials (run on small = R(Q, Q, Q),
    Q (m, rank) an orthonormal basis of the rank-dimensional subspace, when
    m > rank; computed if not given) and, unless one of them is exact
    (relative residual <= EXACT_RESIDUAL after screening), the greedy
    growth on R.
    Each gets `screen_iter` polish iterations; the one with the lowest
    residual is polished on to `max_iter`, then `repair_degenerate` runs,
    and the result is returned as (lam, V, history, converged, steps,
    record), record naming the candidates, their screened residuals and
    whether a repair was kept.
    """
    if small is None:
        small = R if Q is None else np.einsum("abc,ax,by,cz->xyz", R, Q, Q, Q, optimize=True)
    candidates = []
    try:
        for i, (lam, V) in enumerate(jennrich(small, rng, n_trials=n_trials)):
            candidates.append((f"jennrich {i}", lam, V if Q is None else Q @ V))
    except np.linalg.LinAlgError:
        pass  # every slice pair singular: the growth alone
    screened = [(name,) + polish(R, lam, V, max_iter=screen_iter, tol=tol) for name, lam, V in candidates]
    if not any(item[3][-1] <= EXACT_RESIDUAL for item in screened):
        # The growth (O(rank) polishes) only when no Jennrich trial is exact:
        # on an exactly rank-r tensor it costs most of the time (d=30,
        # rank 20: 4.7 of 5.4 s) and cannot do better.
        screened.append(("growth",) + polish(R, *grow(R, rank, rng), max_iter=screen_iter, tol=tol))
    name, lam, V, history, converged, steps = min(screened, key=lambda item: item[3][-1])
    if not converged and max_iter > screen_iter:
        lam, V, more, converged, more_steps = polish(R, lam, V, max_iter=max_iter - screen_iter, tol=tol)
        history = history + more[1:]
        steps = [a + b for a, b in zip(steps, more_steps)]
    record = {"chosen": name, "screened": {item[0]: float(item[3][-1]) for item in screened},
              "repaired": False}
    repaired = repair_degenerate(R, lam, V, rng, max_iter=max_iter, tol=tol)
    if repaired is not None:
        lam, V, more, converged, more_steps = repaired
        history = history + more[1:]
        steps = [a + b for a, b in zip(steps, more_steps)]
        record["repaired"] = True
    return lam, V, history, converged, steps, record


def polish_operator(op, lam, V, *, max_steps=10, tol=1e-10):
    """Levenberg-Marquardt on sum_j b_j^(x)3 = T in T's own dimension d,
    through the operator's contractions (one op.iuu per trial step, which
    gives both the loss, up to the constant |T|^2, and the next gradient).

    With Q an orthonormal basis of span(B) (d x r), the normal equations
    (block (j, l) 3 g_jl^2 I + 6 g_jl b_l b_j^T, plus a damping mu * 3
    g_jj^2 per column) map span(B)-valued steps to span(B) and act on the
    orthogonal complement as 3 (G o G) + damping, column by column. So the
    step is Q a, with a from the (r^2 x r^2) system of C = Q^T B, plus
    -P_perp grad (3 G o G + damping)^{-1}: O(d r^2 + r^6) beyond the
    contraction, nothing of size d^2.

    Stops after max_steps contractions (trial steps, accepted or not), or
    when a step lowers the loss by less than tol times the model's squared
    norm. Returns (lam, V, steps, converged): steps are the largest relative
    column change of each accepted step.
    """
    d, r = V.shape
    B = V * np.cbrt(lam)
    Y = op.iuu(B)

    def phi(B, Y):  # 2 * loss - |T|^2
        return float(np.sum((B.T @ B) ** 3) - 2 * np.sum(B * Y))

    f = phi(B, Y)
    mu, steps, converged, evaluations = 1e-3, [], False, 0
    while evaluations < max_steps:
        G = B.T @ B
        scale = max(float(np.sum(G ** 3)), np.finfo(float).tiny)  # |model|^2
        grad = 3 * (B @ (G * G) - Y)
        Q = np.linalg.qr(B)[0]
        C = Q.T @ B
        g_par = Q.T @ grad
        g_perp = grad - Q @ g_par
        JtJ = _normal_equations(C)
        column = np.maximum(3 * np.diag(G) ** 2, 1e-12 * max(np.max(3 * np.diag(G) ** 2), np.finfo(float).tiny))
        while True:
            a = _damped_solve(JtJ, mu * np.repeat(column, r), -g_par.T.reshape(-1)).reshape(r, r).T
            perp = -scipy.linalg.solve(3 * G * G + mu * np.diag(column), g_perp.T, assume_a="sym").T
            B_new = B + Q @ a + perp
            Y_new = op.iuu(B_new)
            evaluations += 1
            f_new = phi(B_new, Y_new)
            # phi drops |T|^2, so near an exact fit its rounding (~1e-16
            # |T|^2) hides decreases below ~1e-8 in the factors; within that
            # band a step is judged by the gradient instead.
            accept = f_new < f or (f_new - f <= 1e-12 * scale and np.linalg.norm(
                B_new @ ((B_new.T @ B_new) ** 2) - Y_new) < np.linalg.norm(grad) / 3)
            if accept or mu > 1e12 or evaluations >= max_steps:
                break
            mu *= 10
        if not accept:
            converged = mu > 1e12  # no descent even with heavy damping: stationary to rounding
            break
        moved = np.linalg.norm(B_new - B, axis=0) / np.maximum(np.linalg.norm(B, axis=0), np.finfo(float).tiny)
        steps.append(float(moved.max()))
        small = f - f_new <= tol * scale
        B, Y, f = B_new, Y_new, min(f, f_new)
        mu = max(mu / 10, 1e-12)
        if small:
            converged = True
            break
    norms = np.linalg.norm(B, axis=0)
    return norms ** 3, B / np.where(norms > 0, norms, 1.0), steps, converged


# ---------------------------------------------------------------------------
# Joint decomposition of moments of several orders sharing their factors.
#
# M2 = sum_j mu_j v_j v_j^T (k x k), R3 = sum_j lam_j v_j^(x)3 (k x k x k) and
# optionally R4 = sum_j nu_j v_j^(x)4, the same unit v_j. A unit invisible to
# one moment (mu_j ~ 0 for sigmoid and tanh near zero bias, lam_j ~ 0 for
# softplus and ReLU) is still seen by another, so all are fitted at once
# (DESIGN 3.2):
#
# 1. Jennrich on the pencil of matrices that share V: M2, the slices
#    R3(I, I, e_a) and R4(I, I, e_a, e_b), all V diag(.) V^T. Each trial takes
#    two generic random combinations S_a, S_b of them and the eigenvectors of
#    S_a S_b^+ (complex pairs -> real and imaginary parts, `_real_basis`).
# 2. Each trial is scored by the joint residual with least-squares weights
#    (Gram matrices (V^T V)^m, m the order) after a short polish.
# 3. The best few are polished by Levenberg-Marquardt on the joint residual
#    over (V, weights), unit columns kept by renormalising after each step.
#
# Noise scaling. For Gaussian scores and a residual r of variance s^2 the
# sampling noise of mean(r S_m) has variance sigma^2 = s^2 / n at distinct
# indices and, at repeated ones, the variance of the Hermite polynomial
# (He2: 2, He3: 6, He2 He1: 2, He4: 24, ...), in any orthonormal basis. A
# symmetric array's Frobenius norm counts an entry as often as its index
# permutations, and that count times its variance is m! for every entry, so
# sum_m |E_m|^2 / (m! sigma^2) is the chi-square of the independent entries:
# each moment is divided by sqrt(m!) sigma, and neither dominates by its size
# alone. Residuals are reported in these units: for a model that fits to the
# noise their square is about the degrees of freedom (distinct entries minus
# k^2 + (orders - 1) k parameters).
# ---------------------------------------------------------------------------


def _sym(T):
    """The symmetric part of a k x ... x k array (mean over index orders)."""
    perms = list(itertools.permutations(range(T.ndim)))
    return sum(T.transpose(p) for p in perms) / len(perms)


def _contract(T, V, keep=0):
    """T(I^keep, v_j, ..., v_j) for every column v_j of V: shape (k,)*keep + (r,)."""
    X = np.tensordot(T, V, axes=([T.ndim - 1], [0]))
    while X.ndim - 1 > keep:
        X = np.einsum("...aj,aj->...j", X, V)
    return X


def _model(w, V, m):
    """sum_j w_j v_j^(x)m."""
    X = V
    for _ in range(m - 1):
        X = np.einsum("...j,aj->...aj", X, V)
    return X @ w


def _joint_weights(moments, V):
    """Least-squares weights of the unit columns V for each (m, T) moment."""
    G = V.T @ V
    return [np.linalg.lstsq(G ** m, _contract(T, V), rcond=None)[0] for m, T in moments]


def _joint_loss(moments, V, weights):
    return 0.5 * sum(np.sum((_model(w, V, m) - T) ** 2) for (m, T), w in zip(moments, weights))


def _joint_normal_equations(moments, V, weights):
    """J^T J and J^T e of the joint residual e = (model - data) over
    x = (v_1, ..., v_r, weights of each order). With g = V^T V, per order m
    and weights w (the third-order terms are those of `polish`):
      v_j, v_l : w_j w_l (m g^(m-1) I + m (m-1) g^(m-2) v_l v_j^T)
      v_j, w_l : m w_j g^(m-1) v_l        w, w : g^m (0 across orders)
    and J^T e: m w_j E(I, v_j, ..., v_j) for v_j, E(v_j, ..., v_j) for w_j.
    """
    k, r = V.shape
    p, q = r * k, len(moments)
    g = V.T @ V
    H = np.zeros((p + q * r, p + q * r))
    eye, outer = np.zeros((r, r)), np.zeros((r, r))
    grad_v = np.zeros((k, r))
    grad_w = []
    for i, ((m, T), w) in enumerate(zip(moments, weights)):
        ww = np.outer(w, w)
        eye += m * ww * g ** (m - 1)
        outer += m * (m - 1) * ww * g ** (m - 2)
        cols = slice(p + i * r, p + (i + 1) * r)
        H[:p, cols] = np.einsum("j,jl,al->jal", m * w, g ** (m - 1), V).reshape(p, r)
        H[cols, :p] = H[:p, cols].T
        H[cols, cols] = g ** m
        E_v = _contract(_model(w, V, m) - T, V, keep=1)  # E(I, v_j, ..., v_j)
        grad_v += m * w * E_v
        grad_w.append(np.sum(V * E_v, axis=0))
    H[:p, :p] = (np.kron(eye, np.eye(k)).reshape(r, k, r, k)
                 + np.einsum("jl,al,cj->jalc", outer, V, V)).reshape(p, p)
    return H, np.concatenate([grad_v.T.reshape(-1)] + grad_w)


def _unit_columns(V):
    norms = np.linalg.norm(V, axis=0)
    return V / np.where(norms > 0, norms, 1.0)


def _joint_polish(moments, V, *, max_iter=100, tol=1e-12, atol=0.0):
    """Levenberg-Marquardt on the joint residual over (V, weights).

    Scale is a gauge of the model (v_j -> s v_j with w_j / s^m), so the
    normal equations get a term penalising the radial part of each column's
    step, and after each step the columns are renormalised and the weights
    re-solved by least squares (which can only lower the loss). Stops when a
    step lowers the loss by less than tol times itself or by less than atol
    (absolute, in the loss's units: for noise-scaled moments a decrease of
    1e-6 noise variances moves the parameters by about 1e-3 of their
    statistical error). Returns (V, weights, history of the residual norm,
    converged, iterations).
    """
    k, r = V.shape
    p = r * k
    V = _unit_columns(V)
    weights = _joint_weights(moments, V)
    f = _joint_loss(moments, V, weights)
    scale = max(sum(np.sum(T ** 2) for _, T in moments), np.finfo(float).tiny)
    history = [np.sqrt(2 * f)]
    damping, converged, it = 1e-3, False, 0
    for it in range(1, max_iter + 1):
        H, grad = _joint_normal_equations(moments, V, weights)
        diag = np.diag(H).copy()
        floor = 1e-12 * max(diag.max(), np.finfo(float).tiny)
        # Gauge: penalise (v_j . delta_j) with the size of v_j's own block.
        block = np.maximum(diag[:p].reshape(r, k).mean(axis=1), floor)
        gauge = np.zeros_like(H)
        for j in range(r):
            gauge[j * k:(j + 1) * k, j * k:(j + 1) * k] = block[j] * np.outer(V[:, j], V[:, j])
        while True:
            A = H + gauge + damping * np.diag(np.maximum(diag, floor))
            try:
                step = np.linalg.solve(A, -grad)
            except np.linalg.LinAlgError:
                step = np.linalg.lstsq(A, -grad, rcond=None)[0]
            V_new = V + step[:p].reshape(r, k).T
            if np.all(np.isfinite(V_new)) and np.all(np.linalg.norm(V_new, axis=0) > 0):
                V_new = _unit_columns(V_new)
                w_new = _joint_weights(moments, V_new)
                f_new = _joint_loss(moments, V_new, w_new)
                if f_new < f:
                    break
            if damping > 1e12:
                f_new = np.inf
                break
            damping *= 10
        if not f_new < f:
            # No descent even with heavy damping: a stationary point (to rounding).
            converged = (np.linalg.norm(grad) <= 1e-8 * np.sqrt(2 * scale) * max(np.linalg.norm(V), 1.0)
                         or 2 * f <= tol ** 2 * scale)
            break
        small = (f - f_new) < tol * f or f - f_new < atol or 2 * f_new <= tol ** 2 * scale
        V, weights, f = V_new, w_new, f_new
        damping = max(damping / 10, 1e-12)
        history.append(np.sqrt(2 * f))
        if small:
            converged = True
            break
    return V, weights, history, converged, it


def _pencil_trial(P, rng):
    """Unit eigenvectors of S_a S_b^+ for two random combinations S_a, S_b of
    the pencil P (count, k, k), or None when the eigenproblem fails."""
    Sa = np.tensordot(rng.standard_normal(P.shape[0]), P, axes=1)
    Sb = np.tensordot(rng.standard_normal(P.shape[0]), P, axes=1)
    try:
        # X Sb = Sa in least squares: a singular Sb (lower rank) still separates
        # the components it has; the others come back with zero weight.
        vals, vecs = np.linalg.eig(np.linalg.lstsq(Sb.T, Sa.T, rcond=None)[0].T)
    except np.linalg.LinAlgError:
        return None
    if not (np.all(np.isfinite(vals)) and np.all(np.isfinite(vecs))):
        return None
    return _real_basis(vals, vecs)


def joint_decompose(M2, R3, sigma, rng, *, R4=None, n_trials=12, short=10, n_polish=3, max_iter=200,
                    tol=1e-12, atol=1e-6):
    """Unit factors shared by M2 = sum_j mu_j v_j v_j^T, R3 = sum_j lam_j v_j^(x)3
    (and optionally R4 = sum_j nu_j v_j^(x)4); see the comment above.

    Parameters
    ----------
    M2 : (k, k); R3 : (k, k, k); R4 : (k, k, k, k) or None. All are
        symmetrised; any of them may vanish.
    sigma : float, or one per moment (M2, R3[, R4])
        Noise standard deviation of the moments' entries at distinct indices
        (sd(r) / sqrt(n) for moments of a residual r); the moment of order m
        is divided by sqrt(m!) sigma before anything else. A value <= 0
        (noise-free input) means 1.
    rng : numpy.random.Generator
    n_trials, short, n_polish : random pencil pairs tried (Jennrich), each
        scored by its joint residual after `short` polish iterations (the
        residual straight from the eigenvectors ranks trials poorly under
        noise); the n_polish best are polished to convergence and the best
        result returned.
    max_iter, tol, atol : of the Levenberg-Marquardt polish (see
        `_joint_polish`); atol applies only when every sigma is > 0.

    Returns
    -------
    V : (k, k) unit columns; mu, lam : (k,) weights in the caller's units,
    signs fixed so that lam_j >= 0 (v_j -> -v_j leaves the even orders).
    record : dict with "residual" (noise-scaled joint residual norm),
    "residual_M2", "residual_R3" (and "residual_R4"), "chi2_dof" (residual^2
    over its degrees of freedom: about 1 when the model fits to the noise),
    "z_mu", "z_lam" (and "z_nu"): |weight| in noise units, i.e. which moment
    sees each component; "nu" (R4's weights, or None), "trial_residuals"
    (each trial after its short polish, NaN if it failed), "n_trials",
    "best_trial", "polished" (the trials polished further), "n_iter" (all
    polish iterations), "converged" and "degenerate" (a message, or None).
    """
    M2 = np.asarray(M2, dtype=np.float64)
    if M2.ndim != 2 or M2.shape[0] != M2.shape[1]:
        raise ValueError(f"M2: expected a square matrix, got shape {M2.shape}")
    k = M2.shape[0]
    arrays = [M2, np.asarray(R3, dtype=np.float64)] + ([] if R4 is None else [np.asarray(R4, dtype=np.float64)])
    for m, (name, X) in enumerate(zip(("M2", "R3", "R4"), arrays), start=2):
        if X.shape != (k,) * m:
            raise ValueError(f"{name}: expected shape {(k,) * m} to match M2, got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError(f"{name}: expected finite values, got NaN or infinite entries")
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(arrays),)) if np.ndim(sigma) == 0 \
        else np.asarray(sigma, dtype=np.float64)
    if sig.shape != (len(arrays),):
        raise ValueError(f"sigma: expected a number or {len(arrays)} numbers, got {sigma!r}")
    known = bool(np.all(np.isfinite(sig) & (sig > 0)))
    units = [np.sqrt(math.factorial(m)) * (s if np.isfinite(s) and s > 0 else 1.0)
             for m, s in enumerate(sig, start=2)]
    moments = [(m, _sym(X) / u) for m, (X, u) in enumerate(zip(arrays, units), start=2)]
    n_entries = sum(math.comb(k + m - 1, m) for m, _ in moments)
    dof = max(n_entries - k * k - (len(moments) - 1) * k, 1)
    record = {"n_trials": 0, "trial_residuals": [], "best_trial": None, "polished": [], "n_iter": 0,
              "converged": True, "degenerate": None, "nu": None}

    def finish(V, weights):
        flip = np.where(weights[1] < 0, -1.0, 1.0)  # lam_j >= 0
        V = V * flip
        weights = [w * flip ** m for (m, _), w in zip(moments, weights)]
        res = [float(np.linalg.norm(_model(w, V, m) - T)) for (m, T), w in zip(moments, weights)]
        for (m, _), w, rr, name in zip(moments, weights, res, ("mu", "lam", "nu")):
            record[f"residual_{'MRR'[m - 2]}{m}"] = rr
            record[f"z_{name}"] = np.abs(w)
        total = float(np.sqrt(sum(rr ** 2 for rr in res)))
        record.update(residual=total, chi2_dof=total ** 2 / dof)
        weights = [w * u for w, u in zip(weights, units)]
        if len(weights) == 3:
            record["nu"] = weights[2]
        return V, weights[0], weights[1], record

    if k == 1:
        return finish(np.ones((1, 1)), [T.reshape(1).copy() for _, T in moments])
    if not any(np.any(T) for _, T in moments):
        record["degenerate"] = "every moment is zero: no factors to find (identity returned, weights 0)"
        return finish(np.eye(k), [np.zeros(k) for _ in moments])

    # The pencil: M2 and every slice T(I, I, e_a, ...) of the higher orders.
    P = np.concatenate([T.reshape(k, k, -1).transpose(2, 0, 1) for _, T in moments])
    candidates = []
    for trial in range(n_trials):
        V = _pencil_trial(P, rng)
        record["n_trials"] += 1
        if V is None:
            record["trial_residuals"].append(float("nan"))
            continue
        V, _, history, _, n_iter = _joint_polish(moments, V, max_iter=short, tol=tol, atol=atol if known else 0.0)
        record["n_iter"] += n_iter
        record["trial_residuals"].append(float(history[-1]))
        candidates.append((history[-1], trial, V))
    if not candidates:
        # Every pencil pair failed (for finite input only a LAPACK breakdown
        # can do that): polish from the identity rather than fail.
        record["degenerate"] = "every pencil pair failed; polished from the identity"
        candidates = [(np.inf, None, np.eye(k))]
    candidates.sort(key=lambda item: item[0])
    best = None
    for _, trial, V in candidates[:max(n_polish, 1)]:
        V, weights, history, converged, n_iter = _joint_polish(moments, V, max_iter=max_iter, tol=tol,
                                                               atol=atol if known else 0.0)
        record["polished"].append(trial)
        record["n_iter"] += n_iter
        if best is None or history[-1] < best[0]:
            best = (history[-1], trial, V, weights, converged)
    _, record["best_trial"], V, weights, record["converged"] = best
    return finish(V, weights)
