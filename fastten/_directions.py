"""Starting directions of the hidden units for ``fit``: the tensor stage.

The moments come from the control-variate residual r of the labels
(``fastten._subspace.linear_residual``); their span from
``signal_subspace``; the components from ``fastten.decompose`` in that span.
A decomposed direction is *trusted* when its third moment stands out of the
sampling noise (``visible_z``); the other units start from significant
directions of the second moment, then at random (``select_directions``).
Trusted units get their scales, signs and biases from the moments of
orders 1-3 (``scales_and_biases``). docs/method.md, "Fitting a network",
steps 2-3, has the measurements behind the thresholds.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _bias, _nonorth
from ._subspace import signal_subspace
from .activations import derivative
from .decomposition import decompose
from ._workers import SERIAL

__all__ = ["Directions", "tensor_directions", "random_directions", "initial_units", "third_moment_z",
           "visible_z", "second_moment_directions", "second_order_z", "VISIBLE_Z"]

DUPLICATE_COS = 0.95
# |z| of the third moment along a unit direction below which the moment
# does not see the unit: mean(y He3(u.x)) / its standard error.
VISIBLE_Z = 3.0
# Most components the tensor stage decomposes, and largest rank of the joint
# decomposition (which also uses the projected fourth moment: with it
# zero-bias ReLU at d=20, k=5, n=1e5 was exact in 6 of 6 seeds in 5-6
# iterations (5 of 6, 9-112 iterations without), softplus at d=50, k=10 in
# 4 of 6 (3 of 6)). Both engines' solves cost O(rank^6); wider networks get
# their other units from the second moment and at random.
MAX_DECOMPOSED = 20


@dataclass
class Directions:
    """The units' starting directions U (d, k; unit columns, the trusted ones
    first) and how they were found: ``kept``, the indices of the trusted
    components among the decomposition's factors; ``n_joint``, the units
    started from the joint decomposition of the second and third moments
    (scaled like the trusted ones); ``n_second``, the units started from
    second-moment eigenvectors; ``z``, the decomposed components'
    third-moment z-scores; the ``decomposition`` and ``subspace`` records;
    ``passes`` over the data; ``notes`` for the fit's warnings list."""

    U: np.ndarray
    kept: list = field(default_factory=list)
    n_joint: int = 0
    n_second: int = 0
    z: np.ndarray = None
    decomposition: object = None
    subspace: object = None
    passes: int = 0
    notes: list = field(default_factory=list)

    def to_dict(self):
        dec = self.decomposition
        return {
            "engine": dec.method if dec else None,
            "moment_orders": ([3] + [2] * bool(self.n_joint + self.n_second)) if dec else [],
            "component_weights": dec.weights.tolist() if dec else None,
            "component_weight_gaps": (dec.weights[:-1] / np.maximum(dec.weights[1:], 1e-300)).tolist()
            if dec else None,
            "decomposition_residual": dec.residual if dec else None,
            "component_z": None if self.z is None else np.abs(self.z).tolist(),
            "subspace": self.subspace.to_dict() if self.subspace else None,
            "trusted_components": self.kept,
            "joint_directions": self.n_joint,
            "second_order_directions": self.n_second,
        }


def tensor_directions(op, k, method, rng):
    """The tensor stage on the cross-moment ``op`` of the inputs' score
    functions and the control-variate residuals (NN-LIFT's directions;
    a ``DataMoment`` for Gaussian inputs, a ``fastten.scores.ScoreMoment``
    otherwise); see the module docstring."""
    sub = signal_subspace(op, k, rng) if method not in ("power", "sketch") else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # tol: the stage only initialises; precision far below the
        # moment's sampling error is wasted. 1e-3 against 1e-6: 0.17-0.20 s
        # against 0.31-0.64 s at d=50, k=10, n=1e5 (seeds 1, 2), and the
        # same worst |cos| to three decimals with refine=False at d=20,
        # k=5, n=1e6 (8 seeds).
        # At most MAX_DECOMPOSED components: the dense engines' Levenberg-
        # Marquardt solves cost O(rank^6) (digits, k=32 in d=61, n=1347: the
        # tensor stage took 71 s, 22 s of it in the decomposition and 49 s
        # in the joint path); select_directions fills the other units.
        dec = decompose(op, min(k, MAX_DECOMPOSED), method=method, tol=1e-3,
                        subspace=None if sub is None else sub.basis, random_state=rng)
    z = third_moment_z(op, dec.factors)
    threshold = visible_z(search_dim(op), k)
    candidates = R4 = None
    # The joint decomposition's rank: no more than the directions the
    # combined spectrum supports above its noise edge (none: no joint
    # decomposition). On real data it was most of the stage otherwise
    # (digits, k=16: about 6 of 7 s, and no joint direction used).
    rank = k if sub is None else min(k, sub.supported)
    if sub is not None and 0 < rank <= MAX_DECOMPOSED and np.sum(np.abs(z) >= threshold) < k:
        # Units the third moment does not see may still be seen by the
        # second and fourth (ReLU and softplus near zero bias, DESIGN 3.2):
        # decompose them all at once in the leading dimensions, up to
        # MAX_DECOMPOSED (the fourth moment costs n rank^4 / 24, the joint
        # polish O(rank^6) per step).
        Qk = sub.basis[:, :rank]
        M2 = Qk.T @ op.second_moment_dot(Qk)
        # The fourth moment has the Gaussian score (a DataMoment, or the
        # one-pass fit's sketch of one); a ScoreMoment has none.
        R4 = op.fourth_projected(Qk) if hasattr(op, "fourth_projected") else None
        sigma2, sigma3 = label_noise(op)
        sigma = np.array([sigma2, sigma3, sigma3][:2 + (R4 is not None)])
        V = _nonorth.joint_decompose((M2 + M2.T) / 2, op.project(Qk), sigma, rng, R4=R4)[0]
        candidates = Qk @ V
    U, kept, n_joint, n_second = select_directions(dec.factors, z, threshold, op, rng, candidates,
                                                   None if sub is None else sub.clear_rank(k), count=k)
    # Recorded, not re-issued: the fit checks the directions itself (the z
    # test) and warns about what it cannot recover.
    notes = [f"tensor stage: {w.message}" for w in caught]
    passes = op.passes + 1  # + the residual (op counts E[r S4] projected)
    return Directions(U, kept, n_joint, n_second, z, dec, sub, passes, notes)


def search_dim(op):
    """The dimension the directions were searched in, which sets the noise
    thresholds (``visible_z``, ``second_order_z``): ``op.dim``, or for the
    one-pass fit's sketch (``fastten._one_pass``) the dimension its range
    was chosen in."""
    return getattr(op, "search_dim", op.dim)


def label_noise(op):
    """sd(labels) / sqrt(n) of the second order's labels and of the higher
    orders' (they differ under the quadratic control variate: op.y2)."""
    if hasattr(op, "label_noise"):
        return op.label_noise
    root = np.sqrt(op.y.shape[0])
    return np.std(op.y2) / root, np.std(op.y) / root


def random_directions(d, k, rng):
    """Random unit directions (``init="random"``, the baseline)."""
    U = rng.standard_normal((d, k))
    return Directions(U / np.linalg.norm(U, axis=0))


def initial_units(Xs, y, directions, activation, bias_method, rng, workers=SERIAL):
    """(A1, b1, per-unit records, passes): the trusted units' scales, signs and
    biases from the moments of the centred labels y; every other unit keeps
    its unit direction and zero bias."""
    U, found = directions.U, len(directions.kept) + directions.n_joint
    if not found or bias_method == "zero":
        return U, np.zeros(U.shape[1]), [], 0
    # The trusted and joint directions are the first columns of U.
    A1, b1, units = scales_and_biases(Xs, y, U, range(found), activation, bias_method, rng, workers)
    return A1, b1, units, 1 + (bias_method == "fourier")


def third_moment_z(op, U):
    """mean(y S3(x)(u_j, u_j, u_j)) / its standard error, per column u_j of
    U, for the cross-moment ``op`` (labels op.y); for Gaussian inputs and
    unit u_j, S3(x)(u, u, u) = He3(u . x)."""
    return op.score_spread(U, 3).z()


def visible_z(d, k):
    """Threshold on |z| above which a decomposed direction is trusted.

    The directions come out of an optimisation over a (k + 10)-dimensional
    subspace, so even on pure noise their in-sample |z| is large: measured
    on y independent of x (n = 5e4, 4 seeds), the largest was 5.9 for d=20,
    k=5; 7.4 for d=50, k=10; 8.8 for d=100, k=20. 2 sqrt(k + 10) (7.7, 8.9,
    11) stays above these.
    """
    return 2.0 * np.sqrt(min(d, k + 10))


def second_moment_directions(op, count, exclude, rng):
    """Up to ``count`` unit directions from E[y S2] = E[y (x x^T - I)] off the
    span of ``exclude`` (d, r): the eigenvectors of largest |eigenvalue| of
    the projected matrix, by a randomised range finder with
    ``count + 10`` columns (two passes), with their z-scores
    mean(y He2(u.x)) / standard error (one more pass).

    E[y S2] = sum_j a2_j E[sigma''] a_j a_j^T sees the units whose
    E[sigma''] does not vanish, in particular ReLU and softplus units of any
    bias, which the third moment misses near zero bias (DESIGN 3.2).
    """
    d = op.dim
    Q0 = np.linalg.qr(exclude)[0] if exclude.shape[1] else np.zeros((d, 0))

    def off(V):
        return V - Q0 @ (Q0.T @ V)

    width = min(count + 10, d - Q0.shape[1])
    if width < 1:
        return np.zeros((d, 0)), np.zeros(0)
    Q = np.linalg.qr(off(op.second_moment_dot(off(rng.standard_normal((d, width))))))[0]
    Q = np.linalg.qr(off(Q))[0]  # again: the first projection is lost to rounding in the product
    vals, vecs = np.linalg.eigh(Q.T @ op.second_moment_dot(Q))
    U = Q @ vecs[:, np.argsort(-np.abs(vals))[:count]]
    return U, op.score_spread(U, 2).z()


def second_order_z(d):
    """Threshold on |z| for a direction from E[y S2]: measured on y
    independent of x (n = 5e4, 4 seeds), the largest |z| was 6.7 for d=20,
    8.5 for d=50, 12.2 for d=100, near sqrt(2 d) (the edge of the noise
    matrix's spectrum); 1.5 sqrt(2 d) stays above."""
    return 1.5 * np.sqrt(2.0 * d)


def scales_and_biases(Xs, y, U, kept, activation, bias_method, rng, workers=SERIAL):
    """Scales, signs and biases of the units in ``kept`` from the moments
    (``_bias.recover_units``), where it finds them identifiable; with
    ``bias_method="fourier"`` the biases then come from the paper's Fourier
    estimator. Activations it cannot invert (ReLU: positively homogeneous,
    only a2 s and b / s are identified) keep unit norm and zero bias.
    Returns (A1, b1, per-unit records)."""
    A1, b1 = U.copy(), np.zeros(U.shape[1])
    if activation.name == "relu":
        # Closed form in the unit-norm parametrisation (ReLU is positively
        # homogeneous): orientation from sign(c1 c2), bias -c3 / c2.
        c1, c2, c3 = _bias.moment_coefficients(Xs, y, U[:, list(kept)], workers=workers, check=False)
        orientation, bias, _ = _bias.relu_units_from_moments(c1, c2, c3)
        A1[:, list(kept)] *= orientation
        b1[list(kept)] = bias
        return A1, b1, [{"unit": j, "identifiable": True, "reason": "relu: orientation and b / |a| only",
                         "used": True} for j in kept]
    try:
        A1k, b1k, _, records = _bias.recover_units(Xs, y, U[:, list(kept)], activation, workers, check=False)
    except ValueError as exc:
        reason = str(exc)
        if _increasing_convex(activation):
            # c1 = o a2 |s| E[sigma'] and c2 = a2 s^2 E[sigma''] with both
            # expectations positive: the orientation o is sign(c1 c2).
            c1, c2, _ = _bias.moment_coefficients(Xs, y, U[:, list(kept)], workers=workers, check=False)
            A1[:, list(kept)] *= np.where(c1 * c2 < 0, -1.0, 1.0)
            reason += "; oriented by sign(c1 c2) (an increasing convex activation), unit norm and zero bias"
        return A1, b1, [{"unit": j, "identifiable": False, "reason": reason} for j in kept]
    if bias_method == "fourier":
        # Units the moments scaled to zero have no direction for the
        # estimator to look along: they keep the moments' bias.
        live = np.flatnonzero(np.linalg.norm(A1k, axis=0) > 0)
        b1k = np.array(b1k, dtype=np.float64)
        if live.size:
            b1k[live] = _bias.fourier_biases(Xs, y, A1k[:, live], activation, random_state=rng).b1
    units = []
    for i, j in enumerate(kept):
        ok = records[i]["identifiable"] and np.isfinite(b1k[i]) and np.all(np.isfinite(A1k[:, i]))
        if ok:
            A1[:, j], b1[j] = A1k[:, i], b1k[i]
        units.append({"unit": j, "identifiable": bool(records[i]["identifiable"]), "reason": records[i]["reason"],
                      "used": bool(ok)})
    return A1, b1, units


def select_directions(U, z, threshold, op, rng, candidates=None, limit=None, count=None):
    """The starting directions of the hidden units.

    Keep the columns of U (from the third moment) with |z| >= threshold that
    do not repeat a kept one (|cos| > DUPLICATE_COS), strongest first; fill
    the other units with the ``candidates`` (unit columns; from the joint
    decomposition of the second and third moments) that either moment sees,
    then with significant directions of the second moment off the kept ones
    (``second_moment_directions``), then with random unit directions
    orthogonal to all of those. At most ``limit`` directions (default k)
    come from the moments: asked for more units than the data support, a
    decomposition returns mixtures of the true components, whose moments
    are as significant as theirs. Returns the directions (the kept ones
    first, then the candidates used), the kept columns' indices in U, the
    number of candidates used and the number of second-order directions
    used. ``count``: how many directions to return (default: U's columns).
    """
    d, k = U.shape
    k = k if count is None else count
    limit = k if limit is None else min(k, limit)
    kept = []
    for j in np.argsort(-np.abs(z)):
        if len(kept) == limit:
            break
        if abs(z[j]) >= threshold and not (kept and np.abs(U[:, kept].T @ U[:, j]).max() > DUPLICATE_COS):
            kept.append(int(j))
    out = [U[:, j] for j in kept]
    joint = 0
    if len(out) < limit and candidates is not None:
        # Directions of the joint M2 + M3 decomposition that either moment
        # sees, strongest first (in units of their thresholds).
        score = np.maximum(np.abs(op.score_spread(candidates, 2).z()) / second_order_z(search_dim(op)),
                           np.abs(third_moment_z(op, candidates)) / threshold)
        for j in np.argsort(-score):
            if len(out) == limit or score[j] < 1:
                break
            if not (out and np.abs(np.column_stack(out).T @ candidates[:, j]).max() > DUPLICATE_COS):
                out.append(candidates[:, j])
                joint += 1
    second = []
    if len(out) < limit:
        V, z2 = second_moment_directions(op, limit - len(out), np.column_stack(out) if out else np.zeros((d, 0)),
                                          rng)
        second = [j for j in range(V.shape[1]) if abs(z2[j]) >= second_order_z(search_dim(op))]
        out += [V[:, j] for j in second]
    while len(out) < k:
        g = rng.standard_normal(d)
        if len(out) < d:
            Q = np.linalg.qr(np.column_stack(out))[0] if out else np.zeros((d, 0))
            g -= Q @ (Q.T @ g)
        out.append(g / np.linalg.norm(g))
    return np.column_stack(out), kept, joint, len(second)


def _increasing_convex(activation):
    """sigma' >= 0 and sigma'' >= 0 on [-6, 6] (ReLU, squared ReLU, softplus):
    then E[sigma'] and E[sigma''] are positive at every scale and bias."""
    if activation.max_order < 2:
        return False
    t = np.linspace(-6.0, 6.0, 241)
    return bool(np.all(derivative(activation, t, 1) >= 0) and np.all(derivative(activation, t, 2) >= 0))
