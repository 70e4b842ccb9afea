"""PNG plots for the sgd and scaling benchmarks (matplotlib, Agg backend).

Every function returns the path written, or None when matplotlib is not
installed (the caller has already said so once: see :func:`available`).
"""

from pathlib import Path

import numpy as np

THRESHOLDS = (1e-2, 1e-4, 1e-6)
MIN_SECONDS = 1e-3  # log time axis: earlier points are drawn at 1 ms
MIN_ERROR = 1e-12  # smaller errors (exact fits reach 1e-30) are drawn at the bottom edge


def available():
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    return True


def _pyplot():
    if not available():
        return None
    import matplotlib.pyplot as plt

    return plt


def error_curves(runs, name, title, budget, path, labels):
    """Relative test error against training time, log-log, one colour per
    method and one line per seed; dashed lines at the reported thresholds."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, method in enumerate(labels):
        curves = [r["curve"] for r in runs if r["method"] == method and r["curve"]]
        for j, curve in enumerate(curves):
            t = np.maximum([p[0] for p in curve], MIN_SECONDS)
            e = np.maximum([p[1] for p in curve], MIN_ERROR)
            ax.step(t, e, where="post", color=colours[i % len(colours)], lw=1.2, alpha=0.8,
                    label=labels[method] if j == 0 else None, marker="." if len(curve) < 3 else None)
    for thr in THRESHOLDS:
        ax.axhline(thr, color="grey", ls="--", lw=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(MIN_SECONDS * 10, budget * 1.3)
    ax.set_ylim(MIN_ERROR / 3, None)
    ax.set_xlabel("training time (s), evaluation excluded")
    ax.set_ylabel("test MSE / Var(f)")
    ax.set_title(f"{name}: {title}", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def scaling(points_n, points_d, fits, path):
    """Two panels: fit time against n (d fixed) and against d (n fixed), log-log,
    with the fitted slopes in the legend. points_*: {series: (x list, y list)}."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for ax, points, xlabel in ((axes[0], points_n, "n (samples)"), (axes[1], points_d, "d (features)")):
        for series, (x, y) in points.items():
            slope = fits.get((xlabel[0], series))
            label = series + (f" (slope {slope:.2f})" if slope is not None else "")
            ax.plot(x, y, "o-", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds (median over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("time against n", fontsize=10)
    axes[1].set_title("time against d", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def recovery(points, path):
    """Worst matched |cos| and relative test error against n. points:
    {series: (n list, worst cos list, error list)}."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for series, (n, cos, err) in points.items():
        axes[0].plot(n, cos, "o-", label=series)
        axes[1].plot(n, np.maximum(err, 1e-16), "o-", label=series)
    axes[0].set_ylabel("worst matched |cos| with the planted A1")
    axes[1].set_ylabel("test MSE / Var(f)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("n (samples)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
