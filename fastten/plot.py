"""Plots of a fit: the refinement's loss, recovered weights, the moment spectrum.

Each helper draws on the Matplotlib axes ``ax`` it is given (new axes on a
new figure when ``ax`` is None) and returns them; none calls ``show()``.
Matplotlib is an optional dependency (``pip install fastten[plot]``):
``import fastten`` never imports it, and this module imports it only when a
helper needs a new figure.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from .network import TwoLayerNet

__all__ = ["loss_curve", "recovery", "moment_spectrum"]


def _axes(ax):
    """``ax``, or new axes on a new figure (pyplot imported here, lazily)."""
    if ax is not None:
        if not all(hasattr(ax, name) for name in ("plot", "bar", "axhline")):
            raise TypeError(f"ax: expected None or Matplotlib Axes, got {type(ax).__name__}")
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("fastten.plot needs Matplotlib, the 'plot' extra: pip install fastten[plot]") from error
    return plt.subplots()[1]


def _diagnostics(net_or_diagnostics, name):
    """The diagnostics dict of a TwoLayerNet, or the dict itself."""
    if isinstance(net_or_diagnostics, TwoLayerNet):
        return net_or_diagnostics.diagnostics
    if isinstance(net_or_diagnostics, dict):
        return net_or_diagnostics
    raise TypeError(f"{name}: expected a fastten.TwoLayerNet or its diagnostics dict, "
                    f"got {type(net_or_diagnostics).__name__}")


def loss_curve(net_or_diagnostics, ax=None):
    """Plot the refinement's objective after every accepted step.

    One line per refinement round, against the accepted
    Levenberg-Marquardt steps counted over the whole refinement: the
    rounds of each stage in a colour of their own, labelled with the
    stage's number of rows (the rounds on a subsample of the rows first,
    when the data have more rows than it, then the round on all rows). A
    restart between rounds shows as a jump. The objective is the one the
    refinement minimises: half the mean squared error on
    standardised targets (plus the L2 penalty when ``alpha > 0``), or the
    softmax cross-entropy for classification. The y-axis is logarithmic
    when every value is positive.

    Parameters
    ----------
    net_or_diagnostics : TwoLayerNet or dict
        A network returned by ``fastten.fit`` (or loaded from a file), or its
        ``diagnostics``.
    ax : matplotlib.axes.Axes, optional
        The axes to draw on; new axes on a new figure when None.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on: one line per round, its y-values the round's
        ``diagnostics["refinement_rounds"][i]["losses"]``.

    Raises
    ------
    TypeError
        When ``net_or_diagnostics`` is neither a TwoLayerNet nor a dict, or
        ``ax`` is not Matplotlib axes.
    ValueError
        When the diagnostics hold no per-step losses: the network was
        fitted with ``refine=False`` or ``max_iter=0``, or was not made by
        ``fit``.
    ImportError
        When ``ax`` is None and Matplotlib is not installed.
    """
    diagnostics = _diagnostics(net_or_diagnostics, "net_or_diagnostics")
    rounds = diagnostics.get("refinement_rounds") or []
    if not rounds or any("losses" not in r for r in rounds):
        raise ValueError("net_or_diagnostics: expected the diagnostics of a refined fit, with per-step losses in "
                         "'refinement_rounds', got none (fitted with refine=False or max_iter=0, or not by "
                         "fastten.fit)")
    ax = _axes(ax)
    stages = sorted({r["stage"] for r in rounds})
    records = diagnostics.get("refinement_stages") or []
    names = {stage: (f"{records[stage]['rows']} rows" if stage < len(records) else f"stage {stage}")
             for stage in stages}
    colours = {stage: f"C{i}" for i, stage in enumerate(stages)}
    offset, labelled, positive = 0, set(), True
    for r in rounds:
        losses = np.asarray(r["losses"], dtype=np.float64)
        steps = offset + np.arange(losses.size)
        label = None
        if r["stage"] not in labelled:
            label = names[r["stage"]]
            labelled.add(r["stage"])
        ax.plot(steps, losses, marker=".", color=colours[r["stage"]], label=label)
        offset += losses.size - 1
        positive = positive and bool(np.all(losses > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("accepted Levenberg-Marquardt step")
    ax.set_ylabel("training objective (" + ("softmax cross-entropy" if diagnostics.get("loss") == "softmax"
                                            else "half MSE, standardised targets") + ")")
    ax.set_title("Refinement")
    ax.legend()
    return ax


def _matched_cos(A1, A1_true):
    """``|cos|`` between each planted unit and the fitted unit matched to it.

    Parameters
    ----------
    A1 : array_like, shape (d, k)
        Fitted first-layer weights, one unit per column.
    A1_true : array_like, shape (d, k_true)
        Planted first-layer weights.

    Returns
    -------
    numpy.ndarray, shape (k_true,)
        For planted unit j, ``|cos|`` of the angle between its weight vector and
        the fitted one matched to it by the assignment that maximises the
        summed ``|cos|`` (Hungarian algorithm); 0 for planted units left
        unmatched when the fit has fewer units.

    Raises
    ------
    ValueError
        When an array is not 2-D and finite, the numbers of rows differ, or
        a column is zero.
    """
    A1, A1_true = _weights(A1, "A1"), _weights(A1_true, "A1_true")
    if A1.shape[0] != A1_true.shape[0]:
        raise ValueError(f"A1_true: expected {A1.shape[0]} rows (the network's input dimension), "
                         f"got shape {A1_true.shape}")
    cos = np.abs((A1 / np.linalg.norm(A1, axis=0)).T @ (A1_true / np.linalg.norm(A1_true, axis=0)))
    rows, cols = linear_sum_assignment(-cos)
    matched = np.zeros(A1_true.shape[1])
    matched[cols] = cos[rows, cols]
    return matched


def _weights(A, name):
    """A finite real (d, k) array without zero columns, as float64."""
    A = np.asarray(A)
    if A.ndim != 2 or A.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected a real (d, k) array, got shape {A.shape} and dtype {A.dtype}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    zero = np.flatnonzero(np.linalg.norm(A, axis=0) == 0)
    if zero.size:
        raise ValueError(f"{name}: expected nonzero weight vectors, got a zero column {int(zero[0])}")
    return A.astype(np.float64, copy=False)


def recovery(net, A1_true, ax=None):
    """Plot how well the fitted units recover planted ones.

    A bar per planted unit: ``|cos|`` between its weight vector and the fitted
    unit matched to it (the assignment maximising the
    summed ``|cos|``; the sign of a unit is not identified by the third moment,
    hence the absolute value). The worst matched ``|cos|`` is in the title.

    Parameters
    ----------
    net : TwoLayerNet
        The fitted network.
    A1_true : array_like, shape (d, k_true)
        The planted first-layer weights (``PlantedNetwork.A1``).
    ax : matplotlib.axes.Axes, optional
        The axes to draw on; new axes on a new figure when None.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; bar j's height is planted unit j's matched ``|cos|``.

    Raises
    ------
    TypeError
        When ``net`` is not a TwoLayerNet or ``ax`` is not Matplotlib axes.
    ValueError
        When ``A1_true`` is not a finite 2-D array with the network's number
        of inputs as rows and no zero column.
    ImportError
        When ``ax`` is None and Matplotlib is not installed.
    """
    if not isinstance(net, TwoLayerNet):
        raise TypeError(f"net: expected a fastten.TwoLayerNet, got {type(net).__name__}")
    matched = _matched_cos(net.A1, A1_true)
    ax = _axes(ax)
    ax.bar(np.arange(matched.size), matched, color="C0")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("planted unit")
    ax.set_ylabel("|cos| with the matched fitted unit")
    ax.set_title(f"Recovery: worst matched |cos| = {matched.min():.6f}")
    return ax


def moment_spectrum(net, ax=None):
    """Plot the moment spectrum that suggests ``n_hidden``.

    The singular values of the noise-scaled combined moment matrix of the
    tensor stage (``diagnostics["subspace"]["singular_values"]``, in
    noise units) against their noise edge (a horizontal line): the
    directions above it are the ones the data support, and a dotted
    vertical line marks the gap after the last of them,
    ``diagnostics["suggested_n_hidden"]``.

    Parameters
    ----------
    net : TwoLayerNet or dict
        A network returned by ``fastten.fit`` (or loaded from a file), or its
        ``diagnostics``.
    ax : matplotlib.axes.Axes, optional
        The axes to draw on; new axes on a new figure when None.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on: its first line holds the singular values against
        their rank 1, 2, ...

    Raises
    ------
    TypeError
        When ``net`` is neither a TwoLayerNet nor a dict, or ``ax`` is not
        Matplotlib axes.
    ValueError
        When the diagnostics hold no spectrum: the fit used
        ``init="random"`` or ``method="power"`` or ``"sketch"``.
    ImportError
        When ``ax`` is None and Matplotlib is not installed.
    """
    diagnostics = _diagnostics(net, "net")
    sub = diagnostics.get("subspace")
    if not sub:
        raise ValueError("net: expected the diagnostics of a fit whose tensor stage measured the moment spectrum, "
                         "got none (init='random', method='power' or 'sketch', or not fitted by fastten.fit)")
    values = np.asarray(sub["singular_values"], dtype=np.float64)
    edge, supported = float(sub["noise_edge"]), int(sub["supported"])
    ax = _axes(ax)
    rank = np.arange(1, values.size + 1)
    ax.plot(rank, values, marker="o", color="C0", label="singular values")
    ax.axhline(edge, color="C3", linestyle="--", label=f"noise edge {edge:.2f}")
    if 0 < supported < values.size:
        ax.axvline(supported + 0.5, color="k", linestyle=":", label=f"gap: suggested n_hidden = {supported}")
    if np.all(values > 0):
        ax.set_yscale("log")
    ax.set_xlabel("direction")
    ax.set_ylabel("singular value (noise units)")
    ax.set_title(f"Moment spectrum: {supported} direction{'s' * (supported != 1)} above the noise edge")
    ax.legend()
    return ax
