"""Control variates for the moments of order >= 2 (docs/method.md, "Control variates").

Stein's identity E[g(x) S_m(x)] = E[grad^m g(x)] makes every polynomial g of
degree < m a control variate for the order-m cross-moment: the labels y can
be replaced by r = y - g(x) without changing E[r S_m], and the estimator's
variance falls with Var(r). Three choices (``fit(control_variate=...)``):

- "none": the centred labels;
- "linear": g the least-squares fit of y on [1, x] (every order >= 2 keeps
  its expectation);
- "quadratic": g the least-squares fit on [1, x, z_a z_b - delta_ab]
  (a <= b) with z = Q^T x, Q the (d, m) basis of the signal subspace that
  the tensor stage estimates from the linear residual. Orders 3 and 4 keep
  their expectation. The second does not: E[g S2] = E[grad^2 g] = Q H Q^T
  with H the fitted quadratic's Hessian in z, so the second-order
  contractions keep the linear residual (``DataMoment.y2``), and
  ``ControlVariate.second_moment_correction`` adds Q H Q^T back for a
  caller who wants M2 from the quadratic residual.

With ``cross_fit=True`` the rows are split at random into two halves; the
control variate (and, for the quadratic, its subspace) is fitted on one half
and subtracted on the other, and vice versa, so g is independent of the rows
it is applied to and E[r S_m] = E[y S_m] holds exactly (in-sample, g
correlates with the sampling noise of the moment: a bias of order
(number of features) / n).

The least squares are normal equations accumulated over blocks of rows:
memory O(block p + p^2) for p = 1 + d + m (m + 1) / 2 features, never the
(n, p) design.
"""

from dataclasses import dataclass, field

import numpy as np

from ._subspace import signal_subspace

__all__ = ["CONTROL_VARIATES", "ControlVariate", "fit_control_variate", "quadratic_features", "control_labels",
           "ControlLabels", "streamed_weights"]

CONTROL_VARIATES = ("none", "linear", "quadratic")

# Rows per block of the normal equations (BLOCK_ROWS x p doubles at a time).
BLOCK_ROWS = 8192
# Rows per feature the quadratic control variate needs at least: fewer and
# its subspace is cut to the leading columns that satisfy it. With p
# features least squares removes p / n of the residual's variance by
# chance, and the in-sample bias of the moments grows like p / n.
ROWS_PER_FEATURE = 20


def quadratic_features(Z):
    """The Hermite monomials of degree 2 of the columns of Z (n, m):
    z_a z_b - delta_ab for a <= b, (n, m (m + 1) / 2), in the order of
    ``numpy.triu_indices(m)``. For z ~ N(0, I) they are orthogonal to 1 and
    to z, with variance 1 (a < b) or 2 (a = b)."""
    a, b = np.triu_indices(Z.shape[1])
    F = Z[:, a] * Z[:, b]
    F[:, a == b] -= 1.0
    return F


@dataclass
class ControlVariate:
    """g(x) = intercept + w . x + beta . quadratic_features(basis^T x), the
    least-squares fit of the labels (``fit_control_variate``); basis None
    (and beta empty) for the linear control variate."""

    intercept: float
    w: np.ndarray
    basis: np.ndarray = None
    beta: np.ndarray = None

    @property
    def n_features(self):
        return 1 + self.w.shape[0] + (0 if self.beta is None else self.beta.shape[0])

    def predict(self, X):
        """g at the rows of X (n, d), block by block."""
        out = np.empty(X.shape[0])
        for start in range(0, X.shape[0], BLOCK_ROWS):
            Xb = X[start:start + BLOCK_ROWS]
            g = self.intercept + Xb @ self.w
            if self.basis is not None:
                g += quadratic_features(Xb @ self.basis) @ self.beta
            out[start:start + BLOCK_ROWS] = g
        return out

    def hessian(self):
        """H (m, m), the Hessian of g in z = basis^T x: g = ... + sum_{a<=b}
        beta_ab (z_a z_b - delta_ab), so H_aa = 2 beta_aa and H_ab = H_ba =
        beta_ab. The Hessian in x is basis H basis^T."""
        if self.basis is None:
            return np.zeros((0, 0))
        m = self.basis.shape[1]
        a, b = np.triu_indices(m)
        H = np.zeros((m, m))
        H[a, b] = self.beta
        return H + H.T  # the diagonal doubles: 2 beta_aa

    def second_moment_correction(self, Omega):
        """E[grad^2 g] Omega = basis H basis^T Omega (d, c): what Stein's
        identity says the control variate took out of E[r S2]."""
        if self.basis is None:
            return np.zeros_like(Omega, dtype=np.float64)
        return self.basis @ (self.hessian() @ (self.basis.T @ Omega))


def _design(Xb, basis):
    columns = [np.ones((Xb.shape[0], 1)), Xb]
    if basis is not None:
        columns.append(quadratic_features(Xb @ basis))
    return np.hstack(columns)


def fit_control_variate(X, y, basis=None):
    """The least-squares fit of y (n,) on [1, x] (basis None) or on
    [1, x, quadratic_features(basis^T x)] (basis (d, m)), by normal equations
    accumulated over blocks of BLOCK_ROWS rows. Directions of the design
    with no variation (eigenvalues of the Gram matrix below 1e-12 of the
    largest: a constant feature, a basis that repeats itself) get no
    coefficient."""
    n, d = X.shape
    p = 1 + d + (0 if basis is None else basis.shape[1] * (basis.shape[1] + 1) // 2)
    G, h = np.zeros((p, p)), np.zeros(p)
    for start in range(0, n, BLOCK_ROWS):
        D = _design(X[start:start + BLOCK_ROWS], basis)
        G += D.T @ D
        h += D.T @ y[start:start + BLOCK_ROWS]
    vals, vecs = np.linalg.eigh(G)
    keep = vals > 1e-12 * vals[-1]
    coef = vecs[:, keep] @ ((vecs[:, keep].T @ h) / vals[keep])
    return ControlVariate(float(coef[0]), coef[1:1 + d], basis, None if basis is None else coef[1 + d:])


def usable_basis(basis, n, d):
    """The leading columns of ``basis`` whose quadratic features leave at
    least ROWS_PER_FEATURE rows per feature of the fit (None if none do)."""
    m = basis.shape[1]
    while m and ROWS_PER_FEATURE * (1 + d + m * (m + 1) // 2) > n:
        m -= 1
    return basis[:, :m] if m else None


@dataclass
class ControlLabels:
    """The residual labels of the moments: ``second`` for order 2, ``higher``
    for orders >= 3 (the same array unless the control variate is
    quadratic); ``record`` for the diagnostics; ``passes`` over the data;
    ``quadratics``: (rows, ControlVariate) for each fitted quadratic and the
    rows it was subtracted on (None: all)."""

    second: np.ndarray
    higher: np.ndarray
    record: dict
    passes: int = 0
    quadratics: list = field(default_factory=list)

    def second_moment_correction(self, Omega):
        """What the quadratic control variate took out of mean(higher S2),
        times Omega (d, c): the rows' share of each fitted quadratic's
        Hessian, sum_h (n_h / n) Q_h H_h Q_h^T Omega. E[higher S2] plus it
        is E[y S2] (Stein), so M2 from the quadratic residual is
        mean(higher S2) Omega + this."""
        n = self.higher.shape[0]
        out = np.zeros(Omega.shape)
        for rows, cv in self.quadratics:
            share = 1.0 if rows is None else rows.shape[0] / n
            out += share * cv.second_moment_correction(Omega)
        return out


def _quadratic(op, X, y, r_lin, k, rng):
    """(control variate, passes): the quadratic fit of y on the rows of X, in
    the subspace that the moments of ``op`` with the linear residual r_lin
    span (``signal_subspace``)."""
    sub = signal_subspace(op._restricted(None, r_lin), k, rng)
    basis = usable_basis(sub.basis, *X.shape)
    return fit_control_variate(X, y, basis), sub.passes + 2


def control_labels(op, X, y, kind, cross_fit, k, rng, linear=None):
    """The control-variate residuals of the centred labels y (n,).

    op: the cross-moment operator of the inputs (a DataMoment of rows in
    memory, or a ScoreMoment; its labels are ignored), used to estimate the
    quadratic's subspace through ``op._restricted``; X (n, d): the
    coordinates in which the control variate is a polynomial (those of op,
    in float64: op's may be a float32 copy); kind: one of CONTROL_VARIATES;
    k: the number of directions sought; linear: the in-sample linear
    residual when the caller has it (``fit``'s, from its statistics pass),
    else it is fitted here. See the module docstring.
    """
    n, d = X.shape
    record = {"kind": kind, "cross_fit": bool(cross_fit), "quadratic_dimension": None, "features": None}
    if kind == "none":
        record.update(variance_ratio=1.0, variance_ratio_second=1.0)
        return ControlLabels(y, y, record)
    passes, quadratics = 0, []
    if not cross_fit:
        if linear is None:
            linear, passes = y - fit_control_variate(X, y).predict(X), 2
        r2 = r3 = linear
        if kind == "quadratic":
            cv, used = _quadratic(op, X, y, r2, k, rng)
            r3 = y - cv.predict(X)
            passes += used
            quadratics.append((None, cv))
            record.update(quadratic_dimension=0 if cv.basis is None else int(cv.basis.shape[1]),
                          features=cv.n_features)
    else:
        order = rng.permutation(n)
        halves = (np.sort(order[:n // 2]), np.sort(order[n // 2:]))
        r2, r3 = np.empty(n), np.empty(n)
        dims = []
        for fitted, applied in (halves, halves[::-1]):
            Xf, yf = X[fitted], y[fitted]
            lin = fit_control_variate(Xf, yf)
            r2[applied] = y[applied] - lin.predict(X[applied])
            passes += 1
            if kind == "quadratic":
                cv, used = _quadratic(op._restricted(fitted, yf), Xf, yf, yf - lin.predict(Xf), k, rng)
                r3[applied] = y[applied] - cv.predict(X[applied])
                passes += used / 2
                quadratics.append((applied, cv))
                dims.append(0 if cv.basis is None else int(cv.basis.shape[1]))
            else:
                r3[applied] = r2[applied]
        if dims:
            record.update(quadratic_dimension=dims, features=[1 + d + m * (m + 1) // 2 for m in dims])
    var = np.var(y) or 1.0
    record.update(variance_ratio=float(np.var(r3) / var), variance_ratio_second=float(np.var(r2) / var))
    return ControlLabels(r2, r3, record, int(np.ceil(passes)), quadratics)


def streamed_weights(stats, inputs, y_scale, theta_hat, standard):
    """w = Cov(x~, y~) theta_hat, the linear control variate's weights on the
    whitened inputs x~ (mean 0, covariance I) for the labels y~ = (y - mean)
    / y_scale combined by theta_hat, from a ``Covariance`` of the raw rows
    (``stats``) and their ``Standardiser`` (identity when ``standard``).
    Cov(x / c, y) / y_scale from the statistics on X / c and Y / c_y (powers
    of two: finite for any finite data); times c it is Cov(x, y) / y_scale,
    over s the correlation."""
    cross = stats.scaled_cross / (y_scale / stats.y_scale)
    if standard:
        return (cross * stats.scale[:, None]) @ theta_hat
    keep = inputs.keep
    return inputs.L.T @ ((cross[keep] / (inputs.s[keep] / stats.scale[keep])[:, None]) @ theta_hat)
