"""The output layer and the refinement rounds of ``fit``.

``ridge_output`` fits (a2, b2) by ridge regression. ``refine_network`` runs
Levenberg-Marquardt (``fastten._refine``) in rounds on a random subsample
of the rows, restarting after a stall (``restart``: flip units of the wrong
sign, rescale collapsed units, or re-seed a duplicated or the least useful
unit from the direction the residual's moments see, ``residual_direction``),
then once on all rows.
docs/method.md, "Fitting a network", steps 4-5 and 7.
"""

import logging
import warnings

import numpy as np

from . import _refine
from ._directions import second_moment_directions, second_order_z, third_moment_z, visible_z
from ._output import softmax_loss
from .accumulate import NormalEquations
from ._subspace import linear_residual
from .activations import derivative
from .decomposition import ZeroTensorError, decompose
from .operators import DataMoment
from ._workers import SERIAL

__all__ = ["network_loss", "output_loss", "ridge_output", "refine_network", "residual_direction", "gathered_rows"]

logger = logging.getLogger("fastten")

# Rows of the first refinement stage (and as many held out to compare its
# rounds): noise-free subsamples of this size reached the exact network on
# every d=20 and d=50 planted problem measured, after which the full data
# needs one pass (docs/method.md).
SUBSAMPLE_ROWS = 8192
SUBSAMPLE_PER_PARAMETER = 16
# A round on the subsample ends, as a failure, when its last 10 steps
# lowered the loss by less than 2% together: a plateau that a re-seeded
# round leaves sooner (the demo's first round crawled at 7e-4 of Var(y) for
# 34 of its 50 steps). The round on all rows has no such stop.
STALL = (10, 0.02)
# A round on all rows with rounds to come (no subsample stage: rows >=
# n) ends, as a failure, when its last 5 steps lowered the loss by less than
# 10% together while some unit is collapsed or duplicated
# (``degenerate_units``, on WATCH_ROWS evenly spaced rows): the crawls that
# the restart then ends. Without the second condition such a stop
# interrupts progress (a plain (10, 0.5) stall rule left d=1000 seeds 1
# and 2 inexact after six rounds). Planted sigmoid networks, k=10, n/p =
# 10, iterations with this rule and the restarts below against without:
# d=200, n=2e4, seeds 0-39, 1507 in all against 1778 (seed 17 inexact
# before, exact after; 36 seeds unchanged); d=500, n=5e4, seeds 0-5, 247
# against 418; d=1000, n=1e5, seeds 0-2, 37, 52 and 74 against 37, 188
# and 273. Tanh, d=200, seeds 0-19: 836 against 850 (seed 10 43 fewer,
# seed 7 29 more: a duplicate that its round would have resolved).
WATCH = (5, 0.1)
WATCH_ROWS = 2048
# A unit is collapsed when its activations vary by less than this fraction
# of the median unit's: at the crawls above, 0.03-0.08, a sigmoid unit of
# weight norm 0.1-0.2 (the others' about 1) deep in its tail (|b| / |w| of
# 10-40), where a2 e^b trades against the bias and the steps creep
# (|a2| of 10-50 against 1-2); the working units stood at 0.65 or more. A
# planted unit of weight norm 1 reaches 0.2 at bias 4.
COLLAPSED = 0.2
# Two units whose weight vectors have |cos| above this fit one unit twice.
DUPLICATE = 0.9


def collapsed_units(S):
    """The units whose activations S (rows, k) vary by less than COLLAPSED
    times the median unit's, most collapsed first."""
    spread = S.std(axis=0)
    return [int(j) for j in np.argsort(spread) if spread[j] < COLLAPSED * np.median(spread)]


def duplicate_units(A1, useful):
    """Of each pair of units whose weight vectors have |cos| above
    DUPLICATE, the less useful one (``useful``: |a2_j| times the spread of
    its output), least useful first."""
    W = A1 / np.maximum(np.linalg.norm(A1, axis=0), np.finfo(float).tiny)
    C = np.triu(np.abs(W.T @ W), 1)
    out = {int(i if useful[i] <= useful[j] else j) for i, j in zip(*np.nonzero(C > DUPLICATE))}
    return sorted(out, key=lambda j: useful[j])


def degenerate_units(X, A1, b1, A2, activation):
    """(collapsed units, duplicated units) of the network on rows X."""
    S = derivative(activation, X @ A1 + b1, 0)
    collapsed = collapsed_units(S) if activation.name != "relu" else []
    return collapsed, duplicate_units(A1, np.linalg.norm(A2, axis=1) * S.std(axis=0))


def gathered_rows(d, k, m):
    """The rows a fit out of core keeps in memory for the stages that need
    rows rather than sums (the units' scales, the refinement, the final
    checks): enough for the refinement's subsample and as many held out,
    for d inputs, k units and m outputs."""
    return 2 * max(SUBSAMPLE_ROWS, SUBSAMPLE_PER_PARAMETER * (d * k + k + k * m + m))


def output_loss(F, Y, loss):
    """The mean loss of outputs F (n, m) against Y, without penalty: half the
    summed squared error per row ("squared", as ``_refine``) or the
    cross-entropy of the softmax of F against Y ("softmax")."""
    if loss == "squared":
        return 0.5 * float(np.sum((F - Y) ** 2)) / F.shape[0]
    return softmax_loss(F, Y)[0]


def network_loss(X, Y, A1, b1, A2, b2, activation, loss):
    """``output_loss`` of the network's outputs on the rows of X."""
    return output_loss(derivative(activation, X @ A1 + b1, 0) @ A2 + b2, Y, loss)


def ridge_output(F, Y, ridge):
    """Least squares of Y (n, m) on [F, 1] with an L2 penalty ridge * n on the
    weights of F; returns (A2 (k, m), b2 (m,), condition number): the normal
    equations of ``fastten.accumulate.NormalEquations`` in one block."""
    return NormalEquations()._add(F, Y).result(ridge)


def flip_signs(Xr, Yr, A1, b1, activation, ridge, mse):
    """Greedy sign flips (a_j, b_j) -> (-a_j, -b_j), each kept when the
    refitted output layer lowers the training MSE. Sigmoid and tanh absorb
    a flip into the output layer (sigma(-t) = 1 - sigma(t)); ReLU and
    softplus do not (relu(-t) = relu(t) - t), and a unit of the wrong sign
    is a local minimum of the refinement. Returns (A1, b1, flipped units)."""
    flipped = []
    Z = Xr @ A1 + b1
    for j in range(A1.shape[1]):
        Z[:, j] *= -1.0
        A2, b2, _ = ridge_output(derivative(activation, Z, 0), Yr, ridge)
        trial = float(np.mean((derivative(activation, Z, 0) @ A2 + b2 - Yr) ** 2))
        if trial < mse * (1 - 1e-6):
            mse = trial
            flipped.append(j)
        else:
            Z[:, j] *= -1.0
    signs = np.ones(A1.shape[1])
    signs[flipped] = -1.0
    return A1 * signs, b1 * signs, flipped


def residual_direction(X, Y, A1, b1, A2, b2, activation, rng):
    """The direction the network misses most clearly, from the moments of
    its residual (outputs combined with random weights, minus the linear
    control variate): the top component of the third moment or the top
    eigenvector of the second, whichever stands further out of the noise.

    Returns (direction, significance, passes): significance is that |z|
    over its noise threshold (``visible_z``, ``second_order_z``, both
    measured on labels independent of the inputs), so >= 1 says the
    residual still correlates with the score functions of the inputs: a
    unit is missing or misplaced, and the network is not the best one for
    these data."""
    d, k = A1.shape
    residual = (Y - derivative(activation, X @ A1 + b1, 0) @ A2 - b2) @ rng.standard_normal(Y.shape[1])
    r = linear_residual(X, residual)
    if np.abs(r).max() <= 1e-12 * np.abs(residual).max(initial=np.finfo(float).tiny):
        # A residual linear in x (two distinct inputs, say) has no moment of
        # order >= 2: no direction, no significance.
        u = rng.standard_normal(d)
        return u / np.linalg.norm(u), 0.0, 2
    op = DataMoment(X, r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            u3 = decompose(op, 1, tol=1e-6, random_state=rng).factors
        except ZeroTensorError:  # a third moment that vanishes exactly (inputs of two values)
            u3 = np.eye(d, 1)
    z3 = abs(third_moment_z(op, u3)[0]) / visible_z(d, k)
    u2, z2 = second_moment_directions(op, 1, np.zeros((d, 0)), rng)
    z2 = abs(z2[0]) / second_order_z(d)
    passes = op.passes + 3  # the residual, its control variate, the decomposition (op counts the z-scores)
    return (u3[:, 0], z3, passes) if z3 >= z2 else (u2[:, 0], z2, passes)


def restart(Xr, Yr, A1, b1, A2, b2, activation, ridge, skip, rng, full=None):
    """A new start after a round stalled above zero loss at (A1, b1, A2, b2),
    fitted on (Xr, Yr). The residual's moments come from ``full`` = (X, Y),
    all the rows, when given: a unit the network misses may stand out of the
    noise of n rows and not of a subsample's (on noisy labels, d=50, k=10,
    n=1e5, this rescued 5 of the 6 seeds in 20 that subsample moments lost).
    Returns the new network and the passes over all rows it took.

    First, units of the wrong sign (``flip_signs``). Else collapsed units
    (``collapsed_units``; not for ReLU): each keeps its direction and
    takes the median weight norm of the others and zero bias, except one
    that duplicates another unit (``DUPLICATE``), which takes the residual's
    direction (below). Else the residual is itself a sum of units, and its
    moments point at a direction the network misses: the top component of
    its third moment or the top eigenvector of its second, whichever stands
    further out of the noise. It replaces a duplicated unit
    (``duplicate_units``) or the least useful unit (|a2_j| times the spread
    of its output) after skipping ``skip`` of them (a repeated stall tries
    another unit); for ReLU, a unit active on (almost) every sample or none
    goes first: it is affine or dead there (a ReLU drifts to a large norm
    and bias to make up for a unit of the wrong sign).
    """
    n, d = Xr.shape
    k, m = A2.shape
    mse = float(np.mean((derivative(activation, Xr @ A1 + b1, 0) @ A2 + b2 - Yr) ** 2))
    A1, b1, flipped = flip_signs(Xr, Yr, A1, b1, activation, ridge, mse)
    passes = 0
    if flipped:
        logger.debug("fit: stalled at MSE %.3e; flipped units %s", mse, flipped)
    else:
        S = derivative(activation, Xr @ A1 + b1, 0)
        Xm, Ym = full if full is not None else (Xr, Yr)
        collapsed, duplicates = degenerate_units(Xr, A1, b1, A2, activation)
        A1, b1 = A1.copy(), b1.copy()
        if collapsed:
            norms = np.linalg.norm(A1, axis=0)
            scale = np.median(np.delete(norms, collapsed))
            reseeded = []
            for j in collapsed:
                W = A1 / np.maximum(np.linalg.norm(A1, axis=0), np.finfo(float).tiny)
                overlap = np.abs(np.delete(W, j, axis=1).T @ W[:, j]).max(initial=0.0)
                if not reseeded and (overlap > DUPLICATE or not norms[j] > 0):
                    direction, _, passes = residual_direction(Xm, Ym, A1, b1, A2, b2, activation, rng)
                    A1[:, j] = scale * direction
                    reseeded.append(j)
                elif norms[j] > 0:
                    A1[:, j] *= scale / norms[j]
                b1[j] = 0.0
            logger.debug("fit: stalled at MSE %.3e; rescaled collapsed units %s (re-seeded %s)", mse, collapsed,
                         reseeded)
        else:
            direction, _, passes = residual_direction(Xm, Ym, A1, b1, A2, b2, activation, rng)
            order = list(np.argsort(np.linalg.norm(A2, axis=1) * S.std(axis=0)))
            if activation.name == "relu":
                active = np.mean(derivative(activation, Xr @ A1 + b1, 1) > 0, axis=0)
                degenerate = [j for j in order if not 0.01 <= active[j] <= 0.99]
                order = degenerate + [j for j in order if j not in degenerate]
            order = duplicates + [j for j in order if j not in duplicates]
            unit = int(order[skip % k])
            A1[:, unit], b1[unit] = direction, 0.0
            logger.debug("fit: stalled at MSE %.3e; re-seeded unit %d", mse, unit)
    A2, b2, _ = ridge_output(derivative(activation, Xr @ A1 + b1, 0), Yr, ridge)
    return A1, b1, A2, b2, passes * (full is not None)


def refine_network(Xs, Y, A1, b1, A2, b2, activation, max_iter, n_rounds, ridge, rng, on_step, stopped,
                   rounds, stages, *, alpha=0.0, loss="squared", report=None, X32=None, workers=SERIAL, stream=None):
    """Levenberg-Marquardt rounds on a subsample of rows, then on all rows.

    ``stream`` (``_refine.StreamedRows``), for rows out of core: all the
    rows, more than the subsample's; (Xs, Y) is then a uniform sample of
    them in memory, which gives the subsample and the rows its rounds are
    compared on (as all the rows do in memory), and the round on all rows
    reads the stream.

    ``alpha`` and ``loss`` as in ``_refine.refine``. Restarts between rounds
    (``restart``) are least-squares moves: for the cross-entropy there is
    one round per stage. Appends a record per round (first stage) and per
    stage to ``rounds`` and ``stages``; a round's record keeps its
    objective after every accepted step (``losses``, starting value first:
    ``fastten.plot.loss_curve``). ``report(kind, record, rows)``, if given,
    is called with each record as it is appended (kind "round" or "stage")
    and the rows it used. ``X32``: Xs in float32 if the caller has it (the
    copy ``_refine.refine`` would otherwise make for its CG products).
    ``workers``: the threads of the refinement's passes (``_refine.refine``).
    Returns the best network found.
    """
    n, d = Xs.shape
    k, m = A2.shape
    p = d * k + k + k * m + m
    rows = max(SUBSAMPLE_ROWS, SUBSAMPLE_PER_PARAMETER * p)
    stage_data = [(Xs, Y, X32) if stream is None else (stream, None, None)]
    validation = None
    if stream is not None and not rows < stream.n:
        raise ValueError(f"stream: expected more rows than the subsample's {rows}, got {stream.n}")
    if rows < (n if stream is None else stream.n):
        order = rng.permutation(n)
        keep = np.sort(order[:rows])
        stage_data.insert(0, (Xs[keep], Y[keep], None if X32 is None else X32[keep]))
        # Rounds on the subsample are compared on rows outside it: with
        # noisy labels and few rows per parameter, the subsample has minima
        # that fit it better than the truth does and generalise worse.
        held = np.sort(order[rows: 2 * rows])
        validation = (Xs[held], Y[held])
    for index, (Xr, Yr, X32r) in enumerate(stage_data):
        last_stage = index == len(stage_data) - 1
        streamed = Xr is stream
        rows_r = stream.n if streamed else Xr.shape[0]
        floor = 1e-12 * (stream.variance / m if streamed else np.mean(np.var(Yr, axis=0)))
        # Stop a round when a step gains less than 1e-3 of the statistical
        # excess error (about loss * p / rows for least squares): finer
        # optimisation cannot show in the fit (on noisy labels the steps
        # otherwise crawl along flat valleys for hundreds of iterations).
        # Zero-loss problems stop at the floor instead, reached by quadratic
        # convergence.
        tol = 1e-3 * p / rows_r
        best, record = None, {"rows": rows_r, "iterations": 0, "cg": 0, "passes": 0, "grams": 0,
                              "restart_passes": 0}
        failures = 0
        stage_rounds = 1 if (last_stage and index > 0) or loss != "squared" else n_rounds
        for round_ in range(stage_rounds):
            callback = on_step
            if last_stage and round_ < stage_rounds - 1 and rows_r >= p:  # (never streamed: one round)
                watch_rows = Xr[::max(1, rows_r // WATCH_ROWS)]
                # (Fewer rows than parameters: the network interpolates, and
                # the crawls measured above are not this regime.)
                callback = _watch(on_step, watch_rows, activation)
            res = _refine.refine(Xr, Yr, A1, b1, A2, b2, activation, max_iter=max_iter, tol=tol, rng=rng,
                                 stall=None if last_stage else STALL, callback=callback, alpha=alpha, loss=loss,
                                 X32=X32r, workers=workers)
            objective = res.losses[-1]
            if loss != "squared":
                mse = None
            elif alpha and streamed:
                mse = float(np.mean(stream.errors(res.A1, res.b1, res.A2, res.b2)))
                record["passes"] += 1
            elif alpha:
                mse = 2 * network_loss(Xr, Yr, res.A1, res.b1, res.A2, res.b2, activation, loss) / m
            else:
                mse = 2 * objective / m
            score = objective
            if validation is not None and not last_stage:
                score = network_loss(*validation, res.A1, res.b1, res.A2, res.b2, activation, loss)
            record["iterations"] += res.n_iter
            record["cg"] += res.n_cg
            record["passes"] += res.n_passes
            record["grams"] += res.n_gram
            rounds.append({"stage": index, "iterations": res.n_iter, "cg": res.n_cg, "loss": objective, "mse": mse,
                           "validation_loss": score if score is not objective else None,
                           "converged": res.converged, "losses": [float(v) for v in res.losses]})
            if report is not None:
                report("round", rounds[-1], rows_r)
            # Two rounds in a row that do not beat the best by 0.1% end the
            # rounds (on noisy labels the first round usually ends at the
            # optimum, and the next two confirm it); each failure re-seeds
            # the next least useful unit, from the best network.
            if best is None or score < best[0] * (1 - 1e-3):
                failures = 0
            else:
                failures += 1
            if best is None or score < best[0]:
                best = (score, res.A1, res.b1, res.A2, res.b2, res.converged, objective, mse)
            if stopped() or (mse is not None and mse <= floor) or failures == 2 or round_ == stage_rounds - 1:
                break
            _, A1, b1, A2, b2, *_ = best
            A1, b1, A2, b2, used = restart(Xr, Yr, A1, b1, A2, b2, activation, ridge + alpha / rows_r, failures, rng,
                                          full=(Xs, Y))
            record["restart_passes"] += used
        _, A1, b1, A2, b2, converged, objective, mse = best
        record.update(loss=objective, mse=mse, converged=converged)
        stages.append(record)
        if report is not None:
            report("stage", record, rows_r)
        if stopped():
            break
    return A1, b1, A2, b2


def _watch(on_step, X, activation):
    """The step hook of a round on all rows with rounds to come: on_step,
    then True (stop) when the last WATCH[0] steps lowered the loss by less
    than the fraction WATCH[1] together while some unit is collapsed or
    duplicated on the rows X (``degenerate_units``)."""
    losses = []
    window, fraction = WATCH

    def callback(A1, b1, A2, b2, loss):
        if on_step is not None and on_step(A1, b1, A2, b2, loss):
            return True
        losses.append(loss)
        if len(losses) > window and losses[-1] > (1 - fraction) * losses[-1 - window]:
            if any(degenerate_units(X, A1, b1, A2, activation)):
                logger.debug("fit: a crawl with a collapsed or duplicated unit after %d steps", len(losses))
                return True
        return False

    return callback
