"""Independent dense reference implementations for testing ``fastten``.

Everything here is written from the textbook formulas with explicit dense
tensors and ``numpy.einsum``; clarity is preferred over speed (intended for
d <= 12 and n <= 200).  Only numpy, scipy and the standard library are used.

Conventions: inputs x ~ N(0, I_d); X has shape (n, d); labels y have shape
(n,) and are used exactly as given (no centring).  The Gaussian score
functions S_m are the Hermite tensors of order m, and the empirical
cross-moment of order m is M_m = (1/n) sum_i y_i S_m(x_i).
"""

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import expit

ACTIVATIONS = ("sigmoid", "tanh", "softplus")


# ----------------------------------------------------------------------------
# Score tensors and dense empirical moments
# ----------------------------------------------------------------------------

def score_tensors(x):
    """Return (S1, S2, S3, S4), the Hermite score tensors of one sample x (d,).

    S1 = x;  S2 = x x - I;  S3_abc = x_a x_b x_c - x_a d_bc - x_b d_ac - x_c d_ab;
    S4 = x^(x)4 - (six x x delta terms) + (three delta delta terms).
    """
    x = np.asarray(x, dtype=float)
    I = np.eye(x.shape[0])
    S1 = x.copy()
    S2 = np.einsum("a,b->ab", x, x) - I
    S3 = (np.einsum("a,b,c->abc", x, x, x)
          - np.einsum("a,bc->abc", x, I)
          - np.einsum("b,ac->abc", x, I)
          - np.einsum("c,ab->abc", x, I))
    S4 = (np.einsum("a,b,c,e->abce", x, x, x, x)
          - np.einsum("a,b,ce->abce", x, x, I)
          - np.einsum("a,c,be->abce", x, x, I)
          - np.einsum("a,e,bc->abce", x, x, I)
          - np.einsum("b,c,ae->abce", x, x, I)
          - np.einsum("b,e,ac->abce", x, x, I)
          - np.einsum("c,e,ab->abce", x, x, I)
          + np.einsum("ab,ce->abce", I, I)
          + np.einsum("ac,be->abce", I, I)
          + np.einsum("ae,bc->abce", I, I))
    return S1, S2, S3, S4


def moment_tensor(X, y, order):
    """Dense empirical moment (1/n) sum_i y_i S_order(x_i), shape (d,)*order.

    The sample average is taken term by term: every product of x's is averaged
    with weights y_i / n by einsum, and the Kronecker deltas come from np.eye.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, d = X.shape
    I = np.eye(d)
    m0 = y.sum() / n                                       # (1/n) sum y_i
    m1 = np.einsum("i,ia->a", y, X) / n                    # (1/n) sum y_i x_i
    m2 = np.einsum("i,ia,ib->ab", y, X, X) / n             # (1/n) sum y_i x x
    if order == 1:
        return m1
    if order == 2:
        return m2 - m0 * I
    if order == 3:
        m3 = np.einsum("i,ia,ib,ic->abc", y, X, X, X) / n
        return (m3 - np.einsum("a,bc->abc", m1, I)
                - np.einsum("b,ac->abc", m1, I)
                - np.einsum("c,ab->abc", m1, I))
    if order == 4:
        m4 = np.einsum("i,ia,ib,ic,ie->abce", y, X, X, X, X) / n
        return (m4
                - np.einsum("ab,ce->abce", m2, I)
                - np.einsum("ac,be->abce", m2, I)
                - np.einsum("ae,bc->abce", m2, I)
                - np.einsum("bc,ae->abce", m2, I)
                - np.einsum("be,ac->abce", m2, I)
                - np.einsum("ce,ab->abce", m2, I)
                + m0 * (np.einsum("ab,ce->abce", I, I)
                        + np.einsum("ac,be->abce", I, I)
                        + np.einsum("ae,bc->abce", I, I)))
    raise ValueError("order must be 1, 2, 3 or 4")


# ----------------------------------------------------------------------------
# Contractions of the dense moment tensors
# ----------------------------------------------------------------------------

def first(X, y):
    """M1 = (1/n) sum_i y_i x_i, shape (d,)."""
    return moment_tensor(X, y, 1)


def second_dot(X, y, Omega):
    """M2 @ Omega, shape (d, m), for Omega of shape (d, m)."""
    return np.einsum("ab,bj->aj", moment_tensor(X, y, 2), Omega)


def third_iuu(X, y, U):
    """Column j equals M3(I, u_j, u_j); U is (d, m), result (d, m)."""
    return np.einsum("abc,bj,cj->aj", moment_tensor(X, y, 3), U, U)


def third_uuu(X, y, U):
    """Entry j equals M3(u_j, u_j, u_j); U is (d, m), result (m,)."""
    return np.einsum("abc,aj,bj,cj->j", moment_tensor(X, y, 3), U, U, U)


def third_slice_dot(X, y, theta, Omega):
    """M3(I, I, theta) @ Omega, shape (d, m); theta is (d,), Omega is (d, m)."""
    slab = np.einsum("abc,c->ab", moment_tensor(X, y, 3), theta)
    return np.einsum("ab,bj->aj", slab, Omega)


def third_projected(X, y, W):
    """Multilinear projection M3(W, W, W), shape (k, k, k); W is (d, k)."""
    return np.einsum("abc,ai,bj,ck->ijk", moment_tensor(X, y, 3), W, W, W)


def fourth_iuuu(X, y, U):
    """Column j equals M4(I, u_j, u_j, u_j); U is (d, m), result (d, m)."""
    return np.einsum("abce,bj,cj,ej->aj", moment_tensor(X, y, 4), U, U, U)


def fourth_projected(X, y, W):
    """Multilinear projection M4(W, W, W, W), shape (k, k, k, k)."""
    return np.einsum("abce,ai,bj,ck,el->ijkl",
                     moment_tensor(X, y, 4), W, W, W, W)


# ----------------------------------------------------------------------------
# Activations and their derivatives (closed forms)
# ----------------------------------------------------------------------------

def activation_derivative(z, activation, order=0):
    """Return sigma^(order)(z) for order 0..4 (order 0 is sigma itself).

    sigmoid s:  s' = s(1-s), s'' = s'(1-2s), s''' = s'(1-6s+6s^2),
                s'''' = s'(1-2s)(1-12s+12s^2).
    tanh t:     t' = 1-t^2, t'' = -2t t', t''' = t'(6t^2-2),
                t'''' = 8t t'(2-3t^2).
    softplus:   log(1+e^z); its k-th derivative is the (k-1)-th of sigmoid.
    """
    z = np.asarray(z, dtype=float)
    if activation == "softplus":
        if order == 0:
            return np.logaddexp(0.0, z)
        return activation_derivative(z, "sigmoid", order - 1)
    if activation == "sigmoid":
        s = expit(z)
        ds = s * (1.0 - s)
        forms = (s, ds, ds * (1.0 - 2.0 * s), ds * (1.0 - 6.0 * s + 6.0 * s ** 2),
                 ds * (1.0 - 2.0 * s) * (1.0 - 12.0 * s + 12.0 * s ** 2))
    elif activation == "tanh":
        t = np.tanh(z)
        dt = 1.0 - t ** 2
        forms = (t, dt, -2.0 * t * dt, dt * (6.0 * t ** 2 - 2.0),
                 8.0 * t * dt * (2.0 - 3.0 * t ** 2))
    else:
        raise ValueError("unknown activation %r" % (activation,))
    if order not in range(5):
        raise ValueError("order must be 0..4")
    return forms[order]


# ----------------------------------------------------------------------------
# Population moments of a planted two-layer network (Stein's identity)
# ----------------------------------------------------------------------------

def gaussian_expectation(func, mean, sd, n_nodes=200):
    """E[func(mean + sd * g)] for g ~ N(0, 1) by Gauss-Hermite quadrature.

    Uses probabilists' Hermite nodes (weight exp(-g^2/2)) with the weights
    normalised to sum to one.  mean and sd may be scalars or equal-shape
    arrays; the result has their broadcast shape.  200 nodes are used by
    default because tanh (complex poles at +-i*pi/2) converges slowly: at
    sd = 1 its error is ~7e-7 with 80 nodes but ~4e-13 with 200 nodes
    (sigmoid and softplus are at round-off already with 80).  Larger sd
    needs more nodes; numpy's hermegauss fails (NaN weights) near 400.
    """
    nodes, weights = hermegauss(n_nodes)
    if not np.all(np.isfinite(weights)):
        raise ValueError("hermegauss(%d) is not finite; use fewer nodes" % n_nodes)
    weights = weights / weights.sum()
    mean = np.asarray(mean, dtype=float)[..., None]
    sd = np.asarray(sd, dtype=float)[..., None]
    return np.sum(weights * func(mean + sd * nodes), axis=-1)


def population_weights(A1, b1, a2, activation, order):
    """lambda_j = a2_j E[sigma^(order)(a_j . x + b1_j)], shape (k,).

    a_j is column j of A1 (d, k), so a_j . x + b1_j ~ N(b1_j, |a_j|^2).
    """
    A1 = np.asarray(A1, dtype=float)
    norms = np.linalg.norm(A1, axis=0)
    expect = gaussian_expectation(
        lambda z: activation_derivative(z, activation, order), b1, norms)
    return np.asarray(a2, dtype=float) * expect


def population_moment(A1, b1, a2, activation, order):
    """E[y S_order(x)] = sum_j lambda_j a_j^(x)order, dense (d,)*order."""
    lam = population_weights(A1, b1, a2, activation, order)
    A1 = np.asarray(A1, dtype=float)
    specs = {1: "j,aj->a", 2: "j,aj,bj->ab", 3: "j,aj,bj,cj->abc",
             4: "j,aj,bj,cj,ej->abce"}
    if order not in specs:
        raise ValueError("order must be 1, 2, 3 or 4")
    return np.einsum(specs[order], lam, *([A1] * order))


def planted_network(d, k, rng, activation="sigmoid"):
    """Random planted network f(x) = a2^T sigma(A1^T x + b1) + b2.

    A1 (d, k) has unit-norm Gaussian-direction columns, b1 ~ U[-1, 1]^k,
    a2 = random signs times U[0.5, 1.5]^k, b2 = 0.  Returns a dict with keys
    'A1', 'b1', 'a2', 'b2', 'activation'.
    """
    A1 = rng.standard_normal((d, k))
    A1 = A1 / np.linalg.norm(A1, axis=0, keepdims=True)
    b1 = rng.uniform(-1.0, 1.0, size=k)
    a2 = rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.5, 1.5, size=k)
    return {"A1": A1, "b1": b1, "a2": a2, "b2": 0.0, "activation": activation}


def network_output(X, net):
    """Labels f(X) = sigma(X A1 + b1) a2 + b2 for X of shape (n, d), -> (n,)."""
    hidden = activation_derivative(np.asarray(X, dtype=float) @ net["A1"]
                                   + net["b1"], net["activation"], 0)
    return hidden @ net["a2"] + net["b2"]


# ----------------------------------------------------------------------------
# Score tensors of product densities (fastten.scores)
# ----------------------------------------------------------------------------

def product_score_tensors(psi, dpsi, d2psi):
    """(S2, S3) of one sample of a product density, dense, from psi, psi' and
    psi'' at its coordinates (each (d,)), by the formulas

    S2 = psi psi - diag(psi');
    S3_abc = psi_a psi_b psi_c - d_ab psi'_a psi_c - d_ac psi'_a psi_b
             - d_bc psi'_b psi_a + d_abc psi''_a.
    """
    psi, dpsi, d2psi = (np.asarray(v, dtype=float) for v in (psi, dpsi, d2psi))
    d = psi.shape[0]
    D = np.diag(dpsi)
    D3 = np.zeros((d, d, d))
    D3[np.arange(d), np.arange(d), np.arange(d)] = d2psi
    S2 = np.einsum("a,b->ab", psi, psi) - D
    S3 = (np.einsum("a,b,c->abc", psi, psi, psi)
          - np.einsum("ab,c->abc", D, psi)
          - np.einsum("ac,b->abc", D, psi)
          - np.einsum("bc,a->abc", D, psi)
          + D3)
    return S2, S3


def product_density_scores(ratios):
    """(S2, S3) of one sample from the definition S_m = (-1)^m grad^m p / p.

    ratios (4, d): row r holds p_a^(r)(x_a) / p_a(x_a) for each coordinate a
    (row 0 is all ones). For a product density, d^m p / (dx_a1 ... dx_am) / p
    is the product over coordinates a of ratios[count of a among a1..am, a].
    """
    ratios = np.asarray(ratios, dtype=float)
    d = ratios.shape[1]
    out = []
    for order in (2, 3):
        S = np.empty((d,) * order)
        for idx in np.ndindex(*S.shape):
            counts = np.bincount(np.array(idx), minlength=d)
            S[idx] = (-1) ** order * np.prod(ratios[counts, np.arange(d)])
        out.append(S)
    return tuple(out)


def product_score_samples(Psi, dPsi, d2Psi):
    """Stacks (n, d, d) and (n, d, d, d) of the per-sample S2 and S3 from the
    (n, d) arrays of psi, psi', psi'' at the samples."""
    pairs = [product_score_tensors(*rows) for rows in zip(Psi, dPsi, d2Psi)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def product_score_moment(Psi, dPsi, d2Psi, y, order):
    """Dense (1/n) sum_i y_i S_order(x_i), order 2 or 3."""
    S = product_score_samples(Psi, dPsi, d2Psi)[order - 2]
    return np.einsum("i,i...->...", np.asarray(y, dtype=float), S) / S.shape[0]
