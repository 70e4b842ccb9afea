"""Local refinement of a two-layer network: Levenberg-Marquardt on the mean
squared error, with matrix-free Gauss-Newton products.

f(x) = a2^T sigma(A1^T x + b1) + b2. With Z = X A1 + b1, S = sigma(Z),
G = sigma'(Z) * a2 (columnwise), the Jacobian J (n x p) acts as

    J v      = ((X V_A + v_b1) * G) 1 + S v_a2 + v_b2
    J^T u    = (X^T (u G), 1^T (u G), S^T u, 1^T u)

so a product with J^T J costs two matrix products with X (O(n d k)), and
J is never formed. Each damped Gauss-Newton step (J^T J / n + mu D) delta = -g
is solved by conjugate gradients preconditioned with J^T J / m + mu D
computed on a fixed subsample of m rows (p x p: a few CG iterations then
correct the subsample's error).
Near the optimum the loss is locally strongly convex (Zhong et al. 2017), and
Gauss-Newton converges fast from the tensor initialisation.
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ._kernels import gn_product_acc
from .activations import value_and_slope


@dataclass
class RefineResult:
    A1: np.ndarray
    b1: np.ndarray
    a2: np.ndarray
    b2: float
    losses: list        # mean squared error / 2 after each accepted step, starting value first
    n_iter: int
    n_cg: int
    converged: bool


class _Net:
    """Parameters packed as one vector: A1 (unit-major), b1, a2, b2."""

    def __init__(self, d, k):
        self.d, self.k = d, k
        self.size = d * k + 2 * k + 1

    def unpack(self, theta):
        d, k = self.d, self.k
        A1 = theta[: d * k].reshape(k, d).T
        return A1, theta[d * k: d * k + k], theta[d * k + k: d * k + 2 * k], theta[-1]

    def pack(self, A1, b1, a2, b2):
        return np.concatenate([A1.T.reshape(-1), b1, a2, [b2]])


def _state(X, theta, net, activation):
    A1, b1, a2, b2 = net.unpack(theta)
    Z = X @ A1 + b1
    S, G = value_and_slope(activation, Z)
    G *= a2
    return S, G, S @ a2 + b2


def _gn_product(X, S, G, v, net):
    """J^T J v in one pass over X (the kernel gn_product_acc)."""
    VA, vb1, va2, vb2 = net.unpack(v)
    outA, outb1, outa2, outb2 = np.zeros((net.d, net.k)), np.zeros(net.k), np.zeros(net.k), np.zeros(1)
    gn_product_acc(X, G, S, np.ascontiguousarray(VA), vb1, va2, float(vb2), outA, outb1, outa2, outb2)
    return net.pack(outA, outb1, outa2, outb2[0])


def _vjp(X, S, G, u, net):
    uG = u[:, None] * G
    return net.pack(X.T @ uG, uG.sum(axis=0), S.T @ u, u.sum())


def _preconditioner(X, S, G, rows, net, mu):
    """Cholesky factor of J^T J / m + mu D on a subsample of m rows, and D
    (the diagonal of J^T J / m, the Marquardt scaling). On the full data the
    CG iterations then only correct the subsample's error."""
    Xs, Ss, Gs = X[rows], S[rows], G[rows]
    m = rows.shape[0]
    J = np.empty((m, net.size))
    J[:, : net.d * net.k] = (Gs[:, :, None] * Xs[:, None, :]).reshape(m, -1)
    J[:, net.d * net.k: net.d * net.k + net.k] = Gs
    J[:, net.d * net.k + net.k: -1] = Ss
    J[:, -1] = 1.0
    H = J.T @ J / m
    diag = np.maximum(np.diag(H).copy(), 1e-12)
    H[np.diag_indices_from(H)] += mu * diag + 1e-12 * diag.max()
    return scipy.linalg.cho_factor(H), diag


def refine(X, y, A1, b1, a2, b2, activation, *, max_iter=50, tol=1e-12, max_cg=50, cg_tol=1e-3,
           n_precondition=4096, rng, callback=None):
    """Minimise mean((f(X) - y)^2) / 2 from the given network.

    ``callback(A1, b1, a2, b2, mse)``, if given, is called after every
    accepted step; returning True stops the refinement there."""
    n, d = X.shape
    k = A1.shape[1]
    net = _Net(d, k)
    theta = net.pack(A1, b1, a2, b2)
    rows = np.sort(rng.choice(n, size=min(n, n_precondition), replace=False))
    S, G, f = _state(X, theta, net, activation)
    r = f - y
    loss = 0.5 * np.mean(r * r)
    losses, mu, n_cg, converged = [loss], 1e-3, 0, False
    scale = 0.5 * np.mean((y - y.mean()) ** 2) or 1.0
    it = 0
    for it in range(1, max_iter + 1):
        g = _vjp(X, S, G, r, net) / n
        factor, diag = _preconditioner(X, S, G, rows, net, mu)

        def hvp(v):
            return _gn_product(X, S, G, v, net) / n + mu * diag * v

        delta, used = _pcg(hvp, -g, lambda v: scipy.linalg.cho_solve(factor, v), max_cg, cg_tol)
        n_cg += used
        predicted = -(g @ delta) - 0.5 * (delta @ (hvp(delta) - mu * diag * delta))
        trial = theta + delta
        S_t, G_t, f_t = _state(X, trial, net, activation)
        r_t = f_t - y
        loss_t = 0.5 * np.mean(r_t * r_t)
        rho = (loss - loss_t) / predicted if predicted > 0 else -1.0
        if rho > 0:
            decrease = loss - loss_t
            theta, S, G, r, loss = trial, S_t, G_t, r_t, loss_t
            losses.append(loss)
            mu *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            if callback is not None and callback(*net.unpack(theta), 2 * loss):
                break
            if decrease <= tol * loss or loss <= 1e-30 * scale:
                converged = True
                break
        else:
            mu *= 4.0
            if mu > 1e12:
                converged = True  # no decrease possible from here
                break
    A1, b1, a2, b2 = net.unpack(theta)
    return RefineResult(A1.copy(), b1.copy(), a2.copy(), float(b2), losses, it, n_cg, converged)


def _pcg(apply, b, precondition, max_iter, rtol):
    x = np.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = r @ z
    b_norm = np.linalg.norm(b)
    for i in range(1, max_iter + 1):
        Ap = apply(p)
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        if np.linalg.norm(r) <= rtol * b_norm:
            return x, i
        z = precondition(r)
        rz, rz_old = r @ z, rz
        p = z + (rz / rz_old) * p
    return x, max_iter
