"""Score functions of product densities, and the cross-moment they give.

NN-LIFT's third moment is E[y S3(x)] = sum_j lambda_j a_j^(x)3 for any input
density p with score functions S_m(x) = (-1)^m grad^m p(x) / p(x); the rest
of the library assumes p Gaussian (S_m the Hermite tensors). Here p is a
product of one-dimensional densities, p(x) = prod_a p_a(x_a). With
psi_a = -(log p_a)' the recursion S_m = -S_{m-1} (x) grad log p - grad S_{m-1}
gives

    S1 = psi,
    S2 = psi psi^T - diag(psi'),
    S3 = psi(x)3 - sym(diag(psi') (x) psi) + diag3(psi'')   (3 placements),

so one sample costs O(d) given psi, psi' and psi'' at its coordinates (for the
Gaussian, psi = t, psi' = 1, psi'' = 0: the Hermite tensors).

- A :class:`ScoreFunction` maps standardised inputs Z (n, d) to the three
  arrays (Psi, dPsi, d2Psi).
- :class:`ProductScore` builds one from one-dimensional families
  (:class:`Gaussian`, :class:`Logistic`, :class:`StudentT`,
  :class:`GeneralizedNormal`, :class:`GaussianMixture2`; all in standardised
  units, mean 0 and variance 1) or from a user's callables.
- :func:`fastten.estimate_product_score` fits each coordinate's psi by score matching
  and reports a held-out Stein-identity check (:func:`fastten.scores.stein_z`, which also
  tells whether a given score, the Gaussian's say, fits data).
- :class:`ScoreMoment` is the implicit M3 = (1/n) sum_i y_i S3(x_i), a
  :class:`fastten.operators.TensorOperator` like ``DataMoment``.
"""

import numbers
from abc import ABC, abstractmethod
from math import comb

import numpy as np
from scipy.interpolate import BSpline
from scipy.special import gammaln, logsumexp

from ._kernels import scores as KS
from .accumulate import Spread, merge_spread, spread_of
from .moments import _plan, _unpack_index, unpack_symmetric
from .operators import TensorOperator
from ._validation import check_int, check_labels, check_samples

__all__ = [
    "ScoreFunction", "ProductScore", "EstimatedScore", "ScoreMoment", "estimate_product_score", "stein_z",
    "ScoreFamily", "Density", "Gaussian", "Logistic", "StudentT", "GeneralizedNormal", "GaussianMixture2",
    "SplineScore",
]

_DERIVATIVES = ("psi", "dpsi", "d2psi")

# Rows per block of ScoreMoment.score_spread's per-sample scores (a
# multiple of the kernels' BLOCK): memory SPREAD_ROWS x m float64.
SPREAD_ROWS = 32 * KS.BLOCK


def _check_real(value, name, low=-np.inf, high=np.inf, *, closed=False):
    """A finite real number in (low, high) ([low, high] when ``closed``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and np.isfinite(value)
    if ok:
        value = float(value)
        ok = low <= value <= high if closed else low < value < high
    if not ok:
        brackets = "[]" if closed else "()"
        raise ValueError(f"{name}: expected a finite number in {brackets[0]}{low:g}, {high:g}{brackets[1]}, "
                         f"got {value!r}")
    return value


def _float64_samples(Z, name):
    return np.ascontiguousarray(check_samples(Z, name), dtype=np.float64)


# ----------------------------------------------------------------------------
# One-dimensional families
# ----------------------------------------------------------------------------

class ScoreFamily(ABC):
    """A one-dimensional score psi = -(log p)' and its first two derivatives.

    Subclasses define ``derivatives(t)``; every method takes a float array t
    of any shape and returns arrays of t's shape, elementwise.
    """

    @abstractmethod
    def derivatives(self, t):
        """The score psi = -(log p)' and its first two derivatives at t.

        Parameters
        ----------
        t : array_like
            The points.

        Returns
        -------
        psi, dpsi, d2psi : numpy.ndarray
            psi(t), psi'(t) and psi''(t), each of t's shape.
        """

    def psi(self, t):
        """The score psi(t) = -(log p)'(t).

        Parameters
        ----------
        t : array_like
            The points.

        Returns
        -------
        numpy.ndarray
            psi(t), of t's shape.
        """
        return self.derivatives(t)[0]

    def dpsi(self, t):
        """The score's derivative psi'(t).

        Parameters
        ----------
        t : array_like
            The points.

        Returns
        -------
        numpy.ndarray
            psi'(t), of t's shape.
        """
        return self.derivatives(t)[1]

    def d2psi(self, t):
        """The score's second derivative psi''(t).

        Parameters
        ----------
        t : array_like
            The points.

        Returns
        -------
        numpy.ndarray
            psi''(t), of t's shape.
        """
        return self.derivatives(t)[2]

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self):
        return {}


class Density(ScoreFamily):
    """A built-in standardised density (mean 0, variance 1): a score family
    that also has ``logpdf(t)`` and ``sample(rng, size)``."""

    @abstractmethod
    def logpdf(self, t):
        """The log density log p(t), elementwise.

        Parameters
        ----------
        t : array_like
            The points.

        Returns
        -------
        numpy.ndarray
            log p(t), of t's shape.
        """

    @abstractmethod
    def sample(self, rng, size):
        """Draw samples from p.

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness.
        size : int or tuple of int
            The shape of the sample.

        Returns
        -------
        numpy.ndarray
            Independent draws from p, of shape ``size``.
        """


class Gaussian(Density):
    """N(0, 1): psi = t, psi' = 1, psi'' = 0 (the Hermite scores)."""

    def logpdf(self, t):
        t = np.asarray(t, dtype=np.float64)
        return -0.5 * t * t - 0.5 * np.log(2 * np.pi)

    def derivatives(self, t):
        t = np.array(t, dtype=np.float64)
        return t, np.ones(t.shape), np.zeros(t.shape)

    def sample(self, rng, size):
        return rng.standard_normal(size)


class Logistic(Density):
    """The logistic density with scale s = sqrt(3) / pi (variance 1).

    psi(t) = tanh(u / 2) / s with u = t / s; psi' = (1 - tanh^2) / (2 s^2);
    psi'' = -tanh (1 - tanh^2) / (2 s^3). Excess kurtosis 1.2.
    """

    scale = np.sqrt(3.0) / np.pi

    def logpdf(self, t):
        u = np.asarray(t, dtype=np.float64) / self.scale
        return -np.abs(u) - 2.0 * np.log1p(np.exp(-np.abs(u))) - np.log(self.scale)

    def derivatives(self, t):
        s = self.scale
        h = np.tanh(np.asarray(t, dtype=np.float64) / (2.0 * s))
        sech2 = 1.0 - h * h
        return h / s, sech2 / (2.0 * s * s), -h * sech2 / (2.0 * s ** 3)

    def sample(self, rng, size):
        return rng.logistic(0.0, self.scale, size)


class StudentT(Density):
    """Student's t with ``nu`` degrees of freedom, scaled to variance 1.

    With c = nu - 2 (nu times the squared scale): psi(t) = (nu + 1) t / (c + t^2),
    psi' = (nu + 1)(c - t^2) / (c + t^2)^2, psi'' = 2 (nu + 1) t (t^2 - 3c) / (c + t^2)^3.

    Parameters
    ----------
    nu : float
        The degrees of freedom, > 4: the method needs moments up to order 4
        of the inputs, which exist only for nu > 4.

    Raises
    ------
    ValueError
        If nu is not a finite number > 4.
    """

    def __init__(self, nu):
        self.nu = _check_real(nu, "nu", 4.0)

    def _params(self):
        return {"nu": self.nu}

    def logpdf(self, t):
        nu, c = self.nu, self.nu - 2.0
        t = np.asarray(t, dtype=np.float64)
        return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(np.pi * c)
                - (nu + 1) / 2 * np.log1p(t * t / c))

    def derivatives(self, t):
        t = np.asarray(t, dtype=np.float64)
        nu1, c = self.nu + 1.0, self.nu - 2.0
        w = 1.0 / (c + t * t)
        return nu1 * t * w, nu1 * (c - t * t) * w * w, 2.0 * nu1 * t * (t * t - 3.0 * c) * w ** 3

    def sample(self, rng, size):
        return np.sqrt((self.nu - 2.0) / self.nu) * rng.standard_t(self.nu, size)


class GeneralizedNormal(Density):
    """The smooth uniform-like density p(t) proportional to exp(-(t / alpha)^beta).

    beta is an even integer (so p is analytic); beta = 2 is the Gaussian and
    as beta grows p tends to the uniform density on [-sqrt(3), sqrt(3)]
    (beta = 8, the default, has excess kurtosis -1.03 against -1.2 for the
    uniform). alpha = sqrt(Gamma(1/beta) / Gamma(3/beta)) makes the variance 1.
    psi(t) = beta t^(beta-1) / alpha^beta and its derivatives are monomials.

    Parameters
    ----------
    beta : int, default 8
        The exponent, an even integer >= 2.

    Raises
    ------
    ValueError
        If beta is not an even integer >= 2.
    """

    def __init__(self, beta=8):
        beta = check_int(beta, "beta", 2)
        if beta % 2:
            raise ValueError(f"beta: expected an even integer >= 2, got {beta}")
        self.beta = beta
        self.alpha = float(np.exp(0.5 * (gammaln(1.0 / beta) - gammaln(3.0 / beta))))

    def _params(self):
        return {"beta": self.beta}

    def logpdf(self, t):
        b, a = self.beta, self.alpha
        return np.log(b / (2.0 * a)) - gammaln(1.0 / b) - (np.asarray(t, dtype=np.float64) / a) ** b

    def derivatives(self, t):
        b, t = self.beta, np.asarray(t, dtype=np.float64)
        coef = b / self.alpha ** b
        psi = coef * t ** (b - 1)
        dpsi = coef * (b - 1) * t ** (b - 2)
        d2psi = coef * (b - 1) * (b - 2) * t ** (b - 3) if b > 2 else np.zeros(t.shape)
        return psi, dpsi, d2psi

    def sample(self, rng, size):
        # |t / alpha|^beta ~ Gamma(1 / beta, 1), with a random sign.
        g = rng.gamma(1.0 / self.beta, 1.0, size)
        return self.alpha * g ** (1.0 / self.beta) * (2.0 * rng.integers(0, 2, size) - 1.0)


class GaussianMixture2(Density):
    """A two-component Gaussian mixture, standardised to mean 0 and variance 1.

    Before standardising: weight w on N(-(1 - w) delta, 1) and 1 - w on
    N(w delta, rho^2) (mean 0), with delta = ``separation`` and rho =
    ``scale_ratio``; then both components are divided by the mixture's
    standard deviation. With responsibilities r_c(t), a_c = (t - m_c) / s_c^2
    and b_c = 1 / s_c^2: psi = E_r[a], psi' = E_r[b] - Var_r[a],
    psi'' = E_r[(a - psi)^3] - 3 E_r[(a - psi) b] (central moments, stable).

    Parameters
    ----------
    weight : float, default 0.5
        The first component's weight, in (0, 1).
    separation : float, default 3.0
        The distance between the means, >= 0, in units of the first
        component's sd.
    scale_ratio : float, default 1.0
        The second component's sd over the first's, > 0.

    Raises
    ------
    ValueError
        If a parameter is outside its range.
    """

    def __init__(self, weight=0.5, separation=3.0, scale_ratio=1.0):
        self.weight = _check_real(weight, "weight", 0.0, 1.0)
        self.separation = _check_real(separation, "separation", 0.0, np.inf, closed=True)
        self.scale_ratio = _check_real(scale_ratio, "scale_ratio", 0.0)
        w, delta, rho = self.weight, self.separation, self.scale_ratio
        sd = np.sqrt(w + (1 - w) * rho ** 2 + w * (1 - w) * delta ** 2)
        self._w = np.array([w, 1.0 - w])
        self._m = np.array([-(1 - w) * delta, w * delta]) / sd
        self._s = np.array([1.0, rho]) / sd

    def _params(self):
        return {"weight": self.weight, "separation": self.separation, "scale_ratio": self.scale_ratio}

    def _log_components(self, t):
        u = (np.asarray(t, dtype=np.float64)[..., None] - self._m) / self._s
        return np.log(self._w) - 0.5 * u * u - np.log(self._s) - 0.5 * np.log(2 * np.pi)

    def logpdf(self, t):
        return logsumexp(self._log_components(t), axis=-1)

    def derivatives(self, t):
        logc = self._log_components(t)
        r = np.exp(logc - logsumexp(logc, axis=-1, keepdims=True))
        b = 1.0 / self._s ** 2
        a = (np.asarray(t, dtype=np.float64)[..., None] - self._m) * b
        psi = np.sum(r * a, axis=-1)
        c = a - psi[..., None]
        return psi, np.sum(r * (b - c * c), axis=-1), np.sum(r * c * (c * c - 3.0 * b), axis=-1)

    def sample(self, rng, size):
        first = rng.random(size) < self.weight
        z = rng.standard_normal(size)
        return np.where(first, self._m[0] + self._s[0] * z, self._m[1] + self._s[1] * z)


# ----------------------------------------------------------------------------
# Score functions of product densities
# ----------------------------------------------------------------------------

class ScoreFunction(ABC):
    """Maps standardised inputs Z (n, d) to (Psi, dPsi, d2Psi).

    Subclasses define ``_evaluate(Z)`` (Z already checked, float64);
    :meth:`fastten.ScoreFunction.evaluate` checks what it returns.
    """

    def evaluate(self, Z):
        """psi, psi' and psi'' of every entry of Z.

        Parameters
        ----------
        Z : array_like, shape (n, d)
            Finite standardised inputs.

        Returns
        -------
        Psi, dPsi, d2Psi : numpy.ndarray, shape (n, d)
            float64 psi, psi' and psi'' of every entry.

        Raises
        ------
        ValueError
            If Z is not a finite 2-D array, or if the score returns an array
            of the wrong shape or with NaN or infinite values (the message
            names the score and the derivative).
        """
        Z = _float64_samples(Z, "Z")
        return tuple(self._checked(v, name, Z) for v, name in zip(self._evaluate(Z), _DERIVATIVES))

    @abstractmethod
    def _evaluate(self, Z):
        """The three arrays, unchecked."""

    def _checked(self, value, name, Z):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self!r}: {name} returned a value that is not a float array ({exc})") from None
        if arr.shape != Z.shape:
            raise ValueError(f"{self!r}: {name} returned shape {arr.shape}, expected {Z.shape} "
                             f"(one value per entry of Z)")
        bad = ~np.isfinite(arr)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"{self!r}: {name} returned {int(bad.sum())} NaN or infinite values "
                             f"(first at row {i}, column {j}, where Z = {Z[i, j]!r})")
        return np.ascontiguousarray(arr)


class ProductScore(ScoreFunction):
    """The score of a product density prod_a p_a(x_a).

    Parameters
    ----------
    families : ScoreFamily, or a sequence of ScoreFamily
        One family for all coordinates, or one per coordinate (column of Z).

    Raises
    ------
    TypeError
        If a family is not a ScoreFamily.
    ValueError
        If the sequence is empty; at :meth:`fastten.ScoreFunction.evaluate`, if its length is not
        the number of columns of Z.
    """

    def __init__(self, families):
        if isinstance(families, ScoreFamily):
            self.families = families
        else:
            families = tuple(families)
            if not families:
                raise ValueError("families: expected a ScoreFamily or a non-empty sequence of them, got an empty one")
            for i, fam in enumerate(families):
                if not isinstance(fam, ScoreFamily):
                    raise TypeError(f"families[{i}]: expected a ScoreFamily (e.g. Logistic()), "
                                    f"got {type(fam).__name__}")
            self.families = families
        self._callables = None

    @classmethod
    def from_callables(cls, psi, dpsi, d2psi):
        """A product score from a user's per-coordinate functions.

        Parameters
        ----------
        psi, dpsi, d2psi : callable
            Each maps an (n, d) float64 array to an (n, d) array (psi, psi'
            and psi'' entrywise; column a may use its own function of the
            coordinate).

        Returns
        -------
        ProductScore
            The score, whose :meth:`fastten.ScoreFunction.evaluate` checks
            the callables' outputs (shape and finiteness) every time,
            starting with the first use.

        Raises
        ------
        TypeError
            If an argument is not callable.
        """
        for name, f in zip(_DERIVATIVES, (psi, dpsi, d2psi)):
            if not callable(f):
                raise TypeError(f"{name}: expected a callable, got {type(f).__name__}")
        score = cls.__new__(cls)
        score.families = None
        score._callables = (psi, dpsi, d2psi)
        return score

    def __repr__(self):
        if self._callables is not None:
            names = ", ".join(f"{n}={getattr(f, '__name__', type(f).__name__)}"
                              for n, f in zip(_DERIVATIVES, self._callables))
            return f"{type(self).__name__}.from_callables({names})"
        fams = self.families
        return f"{type(self).__name__}({fams if isinstance(fams, ScoreFamily) else list(fams)!r})"

    def _evaluate(self, Z):
        if self._callables is not None:
            return tuple(f(Z) for f in self._callables)
        if isinstance(self.families, ScoreFamily):
            return self.families.derivatives(Z)
        d = Z.shape[1]
        if len(self.families) != d:
            raise ValueError(f"families: expected one family, or a list of {d} (one per column of Z), "
                             f"got a list of {len(self.families)}")
        out = tuple(np.empty_like(Z) for _ in _DERIVATIVES)
        groups = {}
        for a, fam in enumerate(self.families):  # columns sharing a family are evaluated together
            groups.setdefault(id(fam), (fam, []))[1].append(a)
        for fam, cols in groups.values():
            for target, value in zip(out, fam.derivatives(Z[:, cols])):
                target[:, cols] = value
        return out


# ----------------------------------------------------------------------------
# Score matching on splines
# ----------------------------------------------------------------------------

def _linear_extension(splines, lo, hi, t):
    """(value, first derivative[, second derivative]) of a spline on
    [lo, hi], continued linearly outside; ``splines`` holds it and its first
    (and second) derivative. Vector coefficients (a basis) add a last axis."""
    t = np.asarray(t, dtype=np.float64)
    tc = np.clip(t, lo, hi)
    v, d1, *d2 = (s(tc) for s in splines)
    shift = (t - tc).reshape(t.shape + (1,) * (v.ndim - t.ndim))
    return (v + d1 * shift, d1, *(np.where(shift == 0.0, d, 0.0) for d in d2))


class SplineScore(ScoreFamily):
    """A score psi given as a cubic spline, continued linearly outside its knots.

    The spline lives on [knots[3], knots[-4]]; outside, psi' is constant and
    psi'' zero. :func:`fastten.estimate_product_score` fits these.

    Parameters
    ----------
    knots : array_like
        The clamped knot vector of a cubic ``scipy.interpolate.BSpline``.
    coef : array_like
        Its coefficients.
    """

    def __init__(self, knots, coef):
        spline = BSpline(np.asarray(knots, dtype=np.float64), np.asarray(coef, dtype=np.float64), 3)
        self._splines = (spline, spline.derivative(1), spline.derivative(2))
        self.knots, self.coef = spline.t, spline.c

    def _params(self):
        return {"range": (float(self.knots[3]), float(self.knots[-4])), "n_coef": len(self.coef)}

    def derivatives(self, t):
        return _linear_extension(self._splines, self.knots[3], self.knots[-4], t)


class EstimatedScore(ProductScore):
    """A :class:`ProductScore` of fitted :class:`SplineScore` families.

    :func:`fastten.estimate_product_score` returns one.

    Parameters
    ----------
    families : sequence of SplineScore
        One fitted family per coordinate.
    diagnostics : dict
        The record of :func:`fastten.estimate_product_score` (plain Python values).
    """

    def __init__(self, families, diagnostics):
        super().__init__(families)
        self.diagnostics = diagnostics


def _roughness(knots):
    """P[k, l] = integral of B_k'' B_l'' over the knot range (cubic B-splines).

    B'' is linear on each knot interval, so 2-point Gauss-Legendre is exact."""
    basis = BSpline(knots, np.eye(len(knots) - 4), 3).derivative(2)
    inner = np.unique(knots[3:-3])
    mid, half = (inner[1:] + inner[:-1]) / 2, (inner[1:] - inner[:-1]) / 2
    nodes = np.concatenate([mid - half / np.sqrt(3), mid + half / np.sqrt(3)])
    B2 = basis(nodes) * np.sqrt(np.concatenate([half, half]))[:, None]
    return B2.T @ B2


RIDGES = 10.0 ** np.arange(-7, 1)
"""The penalty weights ``ridge="auto"`` chooses from."""


def _sm_system(B, dB):
    """(mean(B B^T), mean(B')): the score-matching loss of psi = B c is
    c^T A c / 2 - b^T c."""
    return B.T @ B / B.shape[0], dB.mean(axis=0)


def _fit_coordinate(t, n_knots, ridge, tail):
    """Score matching for one coordinate (rows in random order): minimise
    mean(psi^2 / 2 - psi') + ridge * integral(psi''^2) over psi in the span
    of the (linearly extended) cubic B-splines on quantile knots.

    Returns (SplineScore, the ridge used)."""
    knots_in = np.unique(np.quantile(t, np.linspace(tail, 1.0 - tail, n_knots)))
    if knots_in.shape[0] < 2:
        raise ValueError("Z: a column takes a single value over its central quantiles; "
                         "its score cannot be estimated")
    knots = np.concatenate([[knots_in[0]] * 3, knots_in, [knots_in[-1]] * 3])
    basis = BSpline(knots, np.eye(knots.shape[0] - 4), 3)
    B, dB = _linear_extension((basis, basis.derivative(1)), knots_in[0], knots_in[-1], t)
    P = _roughness(knots)
    A, b = _sm_system(B, dB)
    if ridge == "auto":
        # 5-fold cross-validation of the score-matching loss (which is
        # mean((psi - psi_true)^2) / 2 up to a constant): the fit on four
        # folds is scored on the fifth, for each ridge in RIDGES.
        folds = np.arange(B.shape[0]) % 5
        losses = np.zeros(RIDGES.shape[0])
        for f in range(5):
            A_val, b_val = _sm_system(B[folds == f], dB[folds == f])
            share = np.mean(folds == f)
            A_fit, b_fit = (A - share * A_val) / (1 - share), (b - share * b_val) / (1 - share)
            for r, lam in enumerate(RIDGES):
                c = np.linalg.solve(A_fit + lam * P, b_fit)
                losses[r] += c @ A_val @ c / 2 - b_val @ c
        ridge = float(RIDGES[int(np.argmin(losses))])
    return SplineScore(knots, np.linalg.solve(A + ridge * P, b)), ridge


def _z(g):
    """mean(g) / its standard error, per column."""
    mean = g.mean(axis=0)
    se = g.std(axis=0, ddof=1) / np.sqrt(g.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)))


def stein_z(score, Z):
    """Per-coordinate z-scores of Stein identities that a score must satisfy.

    By integration by parts E[psi(t) g(t)] = E[g'(t)] for the true score of
    t and smooth g of moderate growth. With g = 1, t, psi and t^3:

    - ``mean``:   E[psi] = 0                 (E[S1] = 0),
    - ``linear``: E[psi t - 1] = 0           (E[S1 x^T] = I),
    - ``fisher``: E[psi^2 - psi'] = 0        (E[S2] = 0 on the diagonal),
    - ``cubic``:  E[psi t^3 - 3 t^2] = 0     (what the third moment relies on;
      the Gaussian score psi = t fails it by the excess kurtosis).

    Each z is the sample mean over its standard error; for the true score
    they are approximately standard normal.

    Parameters
    ----------
    score : ScoreFunction
        The score to check.
    Z : array_like, shape (n, d)
        Finite standardised inputs, n >= 2: rows not used to fit the score.

    Returns
    -------
    dict
        "mean", "linear", "fisher" and "cubic", each a float64 array (d,)
        of z-scores.

    Raises
    ------
    ValueError
        As :meth:`fastten.ScoreFunction.evaluate`.
    """
    Z = _float64_samples(Z, "Z")
    Psi, dPsi, _ = score.evaluate(Z)
    Z2 = Z * Z
    return {"mean": _z(Psi), "linear": _z(Psi * Z - 1.0), "fisher": _z(Psi * Psi - dPsi),
            "cubic": _z(Z2 * (Psi * Z - 3.0))}


def estimate_product_score(Z, rng, *, n_knots=8, ridge="auto", heldout=0.25, tail=0.005):
    """Fit a product score to data by score matching, with a held-out check.

    Estimator. For each coordinate t, psi is fitted by score matching
    (Hyvarinen 2005): minimise mean(psi(t)^2 / 2 - psi'(t)) over the
    training rows (for the true score this loss is
    E[(psi - psi_true)^2] / 2 up to a constant, by integration by parts),
    plus ridge * integral(psi''^2) over the knot range. For psi =
    sum_k c_k B_k it is the linear system (mean(B B^T) + ridge P) c =
    mean(B'), P the Gram matrix of the B_k''.

    Knots. Cubic B-splines (clamped) on ``n_knots`` knots at the equally
    spaced quantiles from ``tail`` to ``1 - tail`` of the training rows,
    continued linearly outside that range (there psi' is constant and psi''
    zero), so psi is finite everywhere with linear tails, like a
    Gaussian's. The span holds the constant and linear functions, which the
    penalty leaves free: Gaussian data are fitted without shrinkage.

    Regularisation. ``ridge="auto"`` chooses the weight from RIDGES (1e-7 to
    1) per coordinate by 5-fold cross-validation of the score-matching loss
    on the training rows; a number fixes it.

    Diagnostic. :func:`fastten.scores.stein_z` on the held-out rows: z-scores of E[psi] = 0,
    E[psi t] = 1, E[psi^2 - psi'] = 0 and E[psi t^3] = 3 E[t^2] per
    coordinate, approximately standard normal when psi fits; large ``|z|`` flags
    a misfit. (The fitted psi meets the first two exactly on the training
    rows: the constant and linear functions are in the span, unpenalised.)

    Parameters
    ----------
    Z : array_like, shape (n, d)
        Finite standardised inputs, one column per coordinate.
    rng : numpy.random.Generator
        Draws the train / held-out split.
    n_knots : int, default 8
        Knots per coordinate, >= 2 (n_knots + 2 splines).
    ridge : "auto" or float, default "auto"
        Weight (>= 0) of the roughness penalty, in standardised units.
    heldout : float, default 0.25
        Fraction of rows held out, in (0, 1).
    tail : float, default 0.005
        In (0, 0.5): the outer knots are the tail and 1 - tail quantiles.

    Returns
    -------
    EstimatedScore
        The fitted score. Its ``diagnostics`` dict (plain Python values)
        holds ``train_rows``, ``heldout_rows``, ``n_knots``, ``ridge`` (per
        coordinate, the weight used), ``tail``, ``knot_range`` (per
        coordinate [lo, hi]), ``stein_z`` (name -> per-coordinate list, as
        :func:`fastten.scores.stein_z`), ``max_abs_stein_z`` and ``heldout_loss`` (per
        coordinate, the score-matching loss on the held-out rows: about
        minus half the Fisher information when psi fits).

    Raises
    ------
    TypeError
        If rng is not a numpy Generator.
    ValueError
        If Z is not finite and 2-D, has too few rows (fewer than 4 per
        spline in the training part, or fewer than 2 held out), a parameter
        is outside its range, or a column is (nearly) constant.
    """
    Z = _float64_samples(Z, "Z")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    n_knots = check_int(n_knots, "n_knots", 2)
    if not (isinstance(ridge, str) and ridge == "auto"):
        ridge = _check_real(ridge, "ridge", 0.0, np.inf, closed=True)
    heldout = _check_real(heldout, "heldout", 0.0, 1.0)
    tail = _check_real(tail, "tail", 0.0, 0.5)
    n, d = Z.shape
    n_held = int(round(heldout * n))
    if n - n_held < 4 * (n_knots + 2) or n_held < 2:
        raise ValueError(f"Z: expected enough rows for {n_knots + 2} splines per coordinate "
                         f"({4 * (n_knots + 2)} training rows and 2 held out with heldout={heldout:g}), got {n}")
    order = rng.permutation(n)
    held, train = order[:n_held], order[n_held:]  # random order: the folds of "auto" are random too
    families, ridges = zip(*(_fit_coordinate(Z[train, a], n_knots, ridge, tail) for a in range(d)))
    score = EstimatedScore(families, None)
    Zh = Z[held]
    z = stein_z(score, Zh)
    Psi, dPsi, _ = score.evaluate(Zh)
    score.diagnostics = {
        "train_rows": int(train.shape[0]),
        "heldout_rows": int(n_held),
        "n_knots": n_knots,
        "ridge": list(ridges),
        "tail": tail,
        "knot_range": [[float(f.knots[3]), float(f.knots[-4])] for f in families],
        "stein_z": {k: v.tolist() for k, v in z.items()},
        "max_abs_stein_z": float(max(np.abs(v).max() for v in z.values())),
        "heldout_loss": np.mean(Psi * Psi / 2 - dPsi, axis=0).tolist(),
    }
    return score


# ----------------------------------------------------------------------------
# The cross-moment
# ----------------------------------------------------------------------------

class ScoreMoment(TensorOperator):
    """The implicit M3 = (1/n) sum_i y_i S3(x_i) for a product-density score.

    Same protocol and semantics as :class:`fastten.operators.DataMoment`
    (which it equals, to rounding, for ``ProductScore(Gaussian())``): each
    contraction of :class:`fastten.operators.TensorOperator` is one pass
    over (Psi, dPsi, d2Psi, y) through the kernels of
    ``fastten._kernels.scores``, nothing of size d^2 or d^3 is formed, and
    ``passes`` counts the passes. Labels are used as given.

    Parameters
    ----------
    score : ScoreFunction or tuple of numpy.ndarray
        A score function, or a tuple (Psi, dPsi, d2Psi) of (n, d) arrays
        already evaluated at the inputs.
    Z : array_like, shape (n, d), or None
        The standardised inputs the score is evaluated at; with arrays it
        may be None (if given, only its shape is checked).
    y : array_like, shape (n,)
        Labels.

    Raises
    ------
    TypeError
        If score is neither a ScoreFunction nor a tuple of three arrays.
    ValueError
        If an array has the wrong shape or non-finite values.
    """

    def __init__(self, score, Z, y):
        if isinstance(score, ScoreFunction):
            arrays = score.evaluate(Z)
        elif isinstance(score, (tuple, list)) and len(score) == 3:
            arrays = tuple(_float64_samples(a, name) for a, name in zip(score, ("Psi", "dPsi", "d2Psi")))
            shape = arrays[0].shape
            for a, name in zip(arrays[1:], ("dPsi", "d2Psi")):
                if a.shape != shape:
                    raise ValueError(f"{name}: expected the shape of Psi, {shape}, got {a.shape}")
            if Z is not None and np.shape(Z) != shape:
                raise ValueError(f"Z: expected the shape of Psi, {shape}, got {np.shape(Z)}")
        else:
            raise TypeError(f"score: expected a ScoreFunction or a tuple (Psi, dPsi, d2Psi), "
                            f"got {type(score).__name__}")
        self._set(*arrays, check_labels(y, arrays[0].shape[0], np.float64))

    @classmethod
    def from_arrays(cls, Psi, dPsi, d2Psi, y):
        """The operator from precomputed score arrays, checked like the constructor.

        Parameters
        ----------
        Psi : array_like, shape (n, d)
            psi(x_i) per sample and coordinate.
        dPsi : array_like, shape (n, d)
            psi'(x_i).
        d2Psi : array_like, shape (n, d)
            psi''(x_i).
        y : array_like, shape (n,)
            Labels.

        Returns
        -------
        ScoreMoment
            The implicit cross-moment of these arrays.

        Raises
        ------
        ValueError, TypeError
            As the constructor.
        """
        return cls((Psi, dPsi, d2Psi), None, y)

    @classmethod
    def _trusted(cls, Psi, dPsi, d2Psi, y):
        """For internal callers: C-contiguous float64 arrays, not checked."""
        op = cls.__new__(cls)
        op._set(Psi, dPsi, d2Psi, y)
        return op

    def _set(self, Psi, dPsi, d2Psi, y, y2=None):
        self.Psi, self.dPsi, self.d2Psi, self.y = Psi, dPsi, d2Psi, y
        self.y2 = y if y2 is None else y2  # labels of the second order, as in DataMoment
        self.dim = Psi.shape[1]
        self.passes = 0

    def _restricted(self, rows, y, y2=None):
        """The moment of the same inputs at ``rows`` (None: all of them) with
        labels y (and y2 for the second order), for internal callers."""
        op = ScoreMoment.__new__(ScoreMoment)
        pick = (lambda a: a) if rows is None else (lambda a: np.ascontiguousarray(a[rows]))
        op._set(pick(self.Psi), pick(self.dPsi), pick(self.d2Psi), y, y2)
        return op

    def _pass(self, kernel, data, shape, *vectors, mean=True):
        self.passes += 1
        out = np.zeros(shape)
        kernel(*data, *(np.ascontiguousarray(v, dtype=np.float64) for v in vectors), out)
        return out / self.y.shape[0] if mean else out

    @property
    def _order3(self):
        return self.Psi, self.dPsi, self.d2Psi, self.y

    def iuu(self, U):
        return self._pass(KS.score_t3_iuu_acc, self._order3, U.shape, U)

    def uuu(self, U):
        return self._pass(KS.score_t3_uuu_acc, self._order3, U.shape[1], U)

    def slice_dot(self, theta, Omega):
        return self._pass(KS.score_t3_slice_dot_acc, self._order3, Omega.shape, np.ravel(theta), Omega)

    def second_moment_dot(self, Omega):
        """The second cross-moment times a matrix, E[y2 S2] Omega, in one pass.

        Not part of the third-order protocol. ``y2`` is ``y`` unless the
        quadratic control variate gave the second order labels of its own
        (``fastten._control``).

        Parameters
        ----------
        Omega : numpy.ndarray, shape (d, m)
            float64 vectors to multiply, one per column.

        Returns
        -------
        numpy.ndarray, shape (d, m)
            E[y2 S2] Omega.
        """
        return self._pass(KS.score_s2_dot_acc, (self.Psi, self.dPsi, self.y2), Omega.shape, Omega)

    def score_spread(self, U, order):
        """The spread over the samples of r S_order(x)(u_j, ..., u_j), per column, in one pass.

        As :meth:`fastten.operators.DataMoment.score_spread`, with this
        operator's score functions: the per-sample scores are computed
        ``SPREAD_ROWS`` rows at a time and their mean and centred sum of
        squares merged by Chan's update (memory O(SPREAD_ROWS m), not n x m).

        Parameters
        ----------
        U : numpy.ndarray, shape (d, m)
            float64 vectors u_j, one per column.
        order : {2, 3}
            The score's order; r is ``y2`` for order 2 and ``y`` for order 3.

        Returns
        -------
        fastten.accumulate.Spread
            ``n``, and per column ``mean`` and ``std`` (divided by n) of
            r_i S_order(x_i)(u_j, ..., u_j).
        """
        self.passes += 1
        U = np.ascontiguousarray(U, dtype=np.float64)
        y = self.y2 if order == 2 else self.y
        n, stats = y.shape[0], None
        for i in range(0, n, SPREAD_ROWS):
            j = min(n, i + SPREAD_ROWS)
            H = np.zeros((j - i, U.shape[1]))
            if order == 2:
                KS.score_s2_uu_samples(self.Psi[i:j], self.dPsi[i:j], U, H)
            else:
                KS.score_s3_uuu_samples(self.Psi[i:j], self.dPsi[i:j], self.d2Psi[i:j], U, H)
            block = spread_of(y[i:j, None] * H)
            stats = block if stats is None else merge_spread(stats, i, block, j - i)
        return Spread(n, stats[0], np.sqrt(stats[1] / n))

    def project(self, W):
        """The cross-moment projected on W, M3(W, W, W), in one pass.

        The packed sum of y z^(x)3 (z = W^T psi) minus the three placements
        of W^T diag(C[:, c]) W (C = sum_i y_i psi'_i z_i^T) plus
        sum_a r_a w_a^(x)3 (r = sum_i y_i psi''_i), each unordered index
        triple computed once.

        Parameters
        ----------
        W : numpy.ndarray, shape (d, k)
            float64 projection, one direction per column.

        Returns
        -------
        numpy.ndarray, shape (k, k, k)
            M3(W, W, W), exactly symmetric.
        """
        self.passes += 1
        W = np.ascontiguousarray(W, dtype=np.float64)
        d, k = W.shape
        packed, C, r = np.zeros(comb(k + 2, 3)), np.zeros((d, k)), np.zeros(d)
        KS.score_t3_project_acc(*self._order3, W, *_plan(k, 3), packed, C, r)
        WW = (W[:, :, None] * W[:, None, :]).reshape(d, k * k)
        T2 = (WW.T @ C).reshape(k, k, k)                  # sum_a W_ai W_aj C_al
        T5 = (WW.T @ (r[:, None] * W)).reshape(k, k, k)   # sum_a r_a W_ai W_aj W_al
        a, b, c = _unpack_index(k, 3).T
        packed -= T2[a, b, c] + T2[a, c, b] + T2[b, c, a]
        packed += T5[a, b, c]
        return unpack_symmetric(packed, k, 3) / self.y.shape[0]
