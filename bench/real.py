"""fastten on the small real data sets bundled with scikit-learn.

``python -m bench real`` splits each data set (load_diabetes, load_linnerud,
load_breast_cancer, load_iris, load_wine, load_digits: no download) into
training and test sets at random (test_size 0.25, stratified for
classification) several times and fits, on the same training rows:
fastten.fit on the raw features (it standardises internally: that is under
test), scikit-learn's MLPRegressor/MLPClassifier with solver "adam" and
"lbfgs" of the same width and activation behind a StandardScaler (regression
targets standardised too), and a linear model on standardised features
(RidgeCV; LogisticRegression at the default C). It reports, per data set,
width and method, the median and interquartile range of the held-out score
(R^2, averaged over the outputs of linnerud; accuracy), the median fit time
and the splits on which the fit refused (raised) or failed, and per data set
fastten's margin to the best of scikit-learn's MLPs and the linear model (the
bar of issue #12: within 0.02 of it, or above). Progress goes to stderr; the
Markdown report to stdout.
"""

import argparse
import inspect
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import _timing as T
from .sgd import _loadavg, _positive, _warning_kinds, busy_warning, fastten_source, limit_threads

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "real.jsonl"
TEST_SIZE = 0.25
BAR = 0.02  # issue #12: fastten within this of the best of scikit-learn's MLP and linear model
TIME_LIMIT = 60.0  # seconds per fastten fit, a guard against runaway fits; see --time-limit
MLP_MAX_ITER = 1000  # scikit-learn's default 200 stops adam and lbfgs short on these data sets
RIDGE_ALPHAS = np.logspace(-3, 3, 13)
LOGISTIC_MAX_ITER = 5000
SK_ACTIVATION = {"sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}


# name -> (task, default widths); each list holds one width above the number of features
DATASETS = {
    "diabetes": ("regression", (4, 16)),
    "linnerud": ("regression", (2, 8)),
    "breast_cancer": ("classification", (8, 60)),
    "iris": ("classification", (3, 8)),
    "wine": ("classification", (8, 26)),
    "digits": ("classification", (16, 80)),
}
METHODS = ("fastten", "sklearn-adam", "sklearn-lbfgs", "linear")
LINEAR = "linear"
WIDTHLESS = None  # the width recorded for the linear model
LABELS = {"fastten": "fastten", "sklearn-adam": "scikit-learn MLP, adam", "sklearn-lbfgs": "scikit-learn MLP, lbfgs",
          LINEAR: "linear"}
LINEAR_LABELS = {"regression": "RidgeCV", "classification": "LogisticRegression"}


def load(name):
    """(X, y) of a bundled scikit-learn data set."""
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def add_parser(subparsers):
    """Register the 'real' sub-command."""
    p = subparsers.add_parser("real", help="held-out scores on scikit-learn's bundled data sets (issue #12)",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=tuple(DATASETS), default=list(DATASETS), metavar="NAME",
                   help=f"data sets: {', '.join(DATASETS)}")
    p.add_argument("--widths", nargs="+", type=_positive(int), metavar="K",
                   help="hidden widths for every data set (default: per data set, "
                        + "; ".join(f"{n} {' '.join(map(str, w))}" for n, (_, w) in DATASETS.items()) + ")")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                   help=f"methods: {', '.join(METHODS)}")
    p.add_argument("--activation", choices=tuple(SK_ACTIVATION), default="sigmoid",
                   help="hidden activation of fastten and of the MLPs (sigmoid is scikit-learn's 'logistic')")
    p.add_argument("--alpha", nargs="+", type=_nonnegative_float, default=[1e-4], metavar="A",
                   help="L2 penalty of fastten and the MLPs (scikit-learn's convention and default); several "
                        "values: each split chooses one per method on an inner validation split")
    p.add_argument("--early-stopping", choices=("default", "on", "off"), default="default",
                   help="early stopping of fastten and of the adam MLP: each library's default, or on/off for "
                        "both (lbfgs has none)")
    p.add_argument("--time-limit", type=_nonnegative_float, default=TIME_LIMIT, metavar="SECONDS",
                   help="stop fastten's refinement at its first step after this many seconds of a fit (through "
                        "fit's callback; 0: no limit); such scores are marked *")
    p.add_argument("--splits", type=_positive(int), default=10, help="random train/test splits per data set")
    p.add_argument("--seed", type=int, default=0, help="split i uses seed + i, for the split and for every fit")
    p.add_argument("--threads", type=_positive(int), default=1,
                   help="threads for BLAS and Numba: these problems are too small for more to help, and under "
                        "contention several BLAS threads made scikit-learn's lbfgs 70x slower here")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                   help="JSON-lines file for every fit, row and verdict")
    p.set_defaults(func=run)
    return p


def _nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative float, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative float, got {value}")
    return value


def command_line(args):
    parts = ["python -m bench real"]
    if list(args.datasets) != list(DATASETS):
        parts.append("--datasets " + " ".join(args.datasets))
    parts += ["--widths " + " ".join(map(str, args.widths))] if args.widths else []
    if list(args.methods) != list(METHODS):
        parts.append("--methods " + " ".join(args.methods))
    parts += [f"--activation {args.activation}"] if args.activation != "sigmoid" else []
    parts += ["--alpha " + " ".join(f"{a:g}" for a in args.alpha)] if list(args.alpha) != [1e-4] else []
    parts += [f"--early-stopping {args.early_stopping}"] if args.early_stopping != "default" else []
    parts += [f"--time-limit {args.time_limit:g}"] if args.time_limit != TIME_LIMIT else []
    parts += [f"--splits {args.splits}", f"--seed {args.seed}"]
    parts += [f"--threads {args.threads}"] if args.threads != 1 else []
    return " ".join(parts)


# ----------------------------------------------------------------------------
# The models
# ----------------------------------------------------------------------------

class FastTen:
    """fastten.fit behind fit/predict, given only the options this version
    of fastten.fit takes (``supported``). With a ``time_limit`` (seconds),
    fit's callback stops the refinement at the first step after it
    (``stopped_`` then says so); the tensor stage cannot be stopped."""

    def __init__(self, width, task, activation, alpha, early_stopping, seed, time_limit=None):
        self.options = {"activation": activation, "task": task, "random_state": seed}
        if alpha is not None:
            self.options["alpha"] = alpha
        if early_stopping is not None:
            self.options["early_stopping"] = early_stopping
        self.width, self.task, self.time_limit = width, task, time_limit
        self.stopped_ = False

    @staticmethod
    def supported():
        import fastten

        return inspect.signature(fastten.fit).parameters

    def fit(self, X, y):
        import fastten

        options = dict(self.options)
        if self.time_limit:
            start = time.perf_counter()

            def over_time(network, info):
                self.stopped_ = time.perf_counter() - start > self.time_limit
                return self.stopped_

            options["callback"] = over_time
        self.net_ = fastten.fit(X, y, self.width, **options)
        return self

    def predict(self, X):
        return self.net_.predict_class(X) if self.task == "classification" else self.net_.predict(X)


def make_model(method, task, width, settings, alpha, seed):
    """An unfitted model with fit/predict. ``settings``: activation,
    early_stopping ("default", "on", "off") and fastten's supported
    options."""
    early = {"default": None, "on": True, "off": False}[settings["early_stopping"]]
    if method == "fastten":
        supported = settings["fastten_options"]
        return FastTen(width, task, settings["activation"], alpha if "alpha" in supported else None,
                       early if "early_stopping" in supported else None, seed,
                       settings.get("time_limit") if "callback" in supported else None)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == LINEAR:
        from sklearn.linear_model import LogisticRegression, RidgeCV

        linear = RidgeCV(alphas=RIDGE_ALPHAS) if task == "regression" else LogisticRegression(
            max_iter=LOGISTIC_MAX_ITER)
        return make_pipeline(StandardScaler(), linear)
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    solver = method.split("-")[1]
    options = {"hidden_layer_sizes": (width,), "activation": SK_ACTIVATION[settings["activation"]],
               "solver": solver, "alpha": alpha, "max_iter": MLP_MAX_ITER, "random_state": seed}
    if early is not None and solver == "adam":
        options["early_stopping"] = early
    if task == "classification":
        return make_pipeline(StandardScaler(), MLPClassifier(**options))
    from sklearn.compose import TransformedTargetRegressor

    return TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(**options)),
                                      transformer=StandardScaler())


def score(task, y_true, y_pred):
    """R^2 (averaged over outputs) for regression, accuracy for classification."""
    if task == "classification":
        return float(np.mean(np.asarray(y_pred) == y_true))
    from sklearn.metrics import r2_score

    if not np.all(np.isfinite(y_pred)):
        raise FloatingPointError("non-finite predictions")
    return float(r2_score(y_true, y_pred))


def fit_and_score(model, task, X_train, y_train, X_test, y_test):
    """A record of one fit: status ("ok"; "refused" when fit raised, "error"
    when predicting or scoring did), score, fit time, message, warnings, and
    whether a time limit stopped it. An exception never escapes."""
    record = {"status": "ok", "score": None, "fit_s": None, "message": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            model.fit(X_train, y_train)
        except Exception as exc:  # a refusal is a result here, not a crash
            record.update(status="refused", message=f"{type(exc).__name__}: {exc}")
        record["fit_s"] = time.perf_counter() - start
        if record["status"] == "ok":
            try:
                record["score"] = score(task, y_test, model.predict(X_test))
            except Exception as exc:
                record.update(status="error", message=f"{type(exc).__name__}: {exc}")
    record["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    record["stopped_at_limit"] = getattr(model, "stopped_", False)
    return record


def split(X, y, task, seed):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=TEST_SIZE, random_state=seed,
                            stratify=y if task == "classification" else None)


def fit_selected(method, task, width, settings, X_train, y_train, X_test, y_test, seed):
    """fit_and_score with the alpha of the grid that scores best on an inner
    validation split of the training rows (the same procedure for fastten
    and the MLPs), or the one alpha when there is no grid to choose from."""
    grid = settings["alphas"] if method != LINEAR else [None]
    if method == "fastten" and "alpha" not in settings["fastten_options"]:
        grid = [None]
    inner = {}
    if len(grid) > 1:
        X_fit, X_val, y_fit, y_val = split(X_train, y_train, task, seed)
        for alpha in grid:
            inner[alpha] = fit_and_score(make_model(method, task, width, settings, alpha, seed), task, X_fit, y_fit,
                                         X_val, y_val)["score"]
    scored = {a: s for a, s in inner.items() if s is not None}
    alpha = max(scored, key=scored.get) if scored else grid[0]
    record = fit_and_score(make_model(method, task, width, settings, alpha, seed), task, X_train, y_train, X_test,
                           y_test)
    return dict(record, alpha=alpha, inner_scores={f"{a!r}": s for a, s in inner.items()})


# ----------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------

def summarise(fits):
    """One row per (data set, width, method), data sets in the order run,
    then by width (the linear model last), then in METHODS order: median,
    quartiles and interquartile range of the scores over the splits that
    scored, median fit time over the fits that did not refuse (over all when
    every fit refused), and the splits refused or failed with their distinct
    messages."""
    datasets = list(dict.fromkeys(f["dataset"] for f in fits))
    keys = sorted({(f["dataset"], f["width"], f["method"]) for f in fits},
                  key=lambda k: (datasets.index(k[0]), k[1] is WIDTHLESS, k[1] or 0, METHODS.index(k[2])))
    rows = []
    for key in keys:
        runs = [f for f in fits if (f["dataset"], f["width"], f["method"]) == key]
        scores = [f["score"] for f in runs if f["status"] == "ok"]
        q25, median, q75 = np.percentile(scores, [25, 50, 75]) if scores else (None, None, None)
        failed = [f for f in runs if f["status"] != "ok"]
        alphas = [f["alpha"] for f in runs if f.get("alpha") is not None]
        timed = [f["fit_s"] for f in runs if f["status"] != "refused"] or [f["fit_s"] for f in runs]
        rows.append({"dataset": key[0], "width": key[1], "method": key[2], "task": runs[0]["task"],
                     "splits": len(runs), "scored": len(scores), "median": _float(median), "q25": _float(q25),
                     "q75": _float(q75), "iqr": None if median is None else float(q75 - q25),
                     "median_fit_s": float(np.median(timed)), "failed": len(failed),
                     "stopped": sum(bool(f.get("stopped_at_limit")) for f in runs),
                     "messages": _counts(f"{f['status']}: {f['message']}" for f in failed),
                     "alphas": _counts(f"{a:g}" for a in alphas),
                     "alpha_grid": any(f.get("inner_scores") for f in runs), "warnings": _warning_kinds(runs)})
    return rows


def _float(value):
    return None if value is None else float(value)


def _counts(items):
    counts = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def verdicts(rows):
    """Per data set: the best median of scikit-learn's MLPs and the linear
    model and fastten's best median, over rows scored on every split (the
    width with the best median on the test splits: the same choice for
    both sides), and fastten's margin to it."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset and r["scored"] == r["splits"]]
        peers = [r for r in mine if r["method"] != "fastten"]
        ours = [r for r in mine if r["method"] == "fastten"]
        best = max(peers, key=lambda r: r["median"]) if peers else None
        fast = max(ours, key=lambda r: r["median"]) if ours else None
        margin = fast["median"] - best["median"] if best and fast else None
        out.append({"dataset": dataset, "best": _brief(best), "fastten": _brief(fast), "margin": margin,
                    "meets_bar": None if margin is None else margin >= -BAR})
    return out


def _brief(row):
    return None if row is None else {"method": row["method"], "width": row["width"], "median": row["median"]}


def _who(brief, task, label=True):
    width = "" if brief["width"] is WIDTHLESS else f"width {brief['width']}"
    name = ", ".join(filter(None, [_label(brief["method"], task) if label else "", width]))
    return f"{brief['median']:.3f} ({name})"


def _label(method, task):
    return LINEAR_LABELS[task] if method == LINEAR else LABELS[method]


def verdict_line(verdict, rows):
    task = rows[0]["task"]
    measure = "R^2" if task == "regression" else "accuracy"
    text = f"- {verdict['dataset']} ({measure}): "
    if verdict["best"] is None:
        text += "no scikit-learn model scored on every split"
    else:
        text += f"best of scikit-learn's MLPs and linear model {_who(verdict['best'], task)}"
    fast = [r for r in rows if r["dataset"] == verdict["dataset"] and r["method"] == "fastten"]
    if verdict["fastten"] is None:
        failed = sum(r["failed"] for r in fast)
        return text + (f"; fastten scored on no width on every split ({failed}/{sum(r['splits'] for r in fast)} "
                       "fits refused or failed)." if fast else "; fastten not run.")
    text += f"; fastten's best {_who(verdict['fastten'], task, label=False)}"
    if verdict["margin"] is not None:
        text += f"; margin {verdict['margin']:+.3f}: " + (
            "meets the bar" if verdict["meets_bar"] else f"misses the bar (a margin of -{BAR:g} or above)")
    return text + "."


def table(rows):
    headers = ["data set", "n, d", "width", "method", "median score", "IQR", "median fit (s)", "refused/failed"]
    out = []
    for r in rows:
        width = "-" if r["width"] is WIDTHLESS else str(r["width"])
        label = _label(r["method"], r["task"])
        median = T.fmt(r["median"], ".3f") + (" *" if r["stopped"] else "")
        out.append([r["dataset"], r["shape"], width, label, median, T.fmt(r["iqr"], ".3f"),
                    f"{r['median_fit_s']:.2f}", f"{r['failed']}/{r['splits']}"])
    return T.markdown_table(headers, out, "llrlrrrr")


def message_lines(rows):
    """The distinct refusals and failures, warnings and chosen alphas, per row."""
    lines = []
    for r in rows:
        where = f"{r['dataset']}, width {r['width']}, {r['method']}" if r["width"] is not WIDTHLESS else \
            f"{r['dataset']}, {r['method']}"
        lines += [f"- {where}: {message} ({count}/{r['splits']})" for message, count in r["messages"].items()]
        if r["stopped"]:
            lines.append(f"- {where}: * refinement stopped at the time limit ({r['stopped']}/{r['splits']})")
        lines += [f"- {where}, warning: {_shorten(w)}" for w in r["warnings"]]
        if r["alpha_grid"]:
            lines.append(f"- {where}, alpha chosen: " + ", ".join(f"{a} ({n})" for a, n in r["alphas"].items()))
    return lines


def _shorten(kind, limit=150):
    """A warning kind of _warning_kinds ("message (k/n runs)") cut to about
    limit characters, keeping the count."""
    text, _, count = " ".join(kind.split()).rpartition(" (")
    return (text if len(text) <= limit else text[:limit - 3] + "...") + f" ({count}"


# ----------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------

def _versions():
    import numba
    import scipy
    import sklearn

    return {"numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
            "scikit-learn": sklearn.__version__}


def _fastten_settings_note(settings, defaults):
    """What fastten.fit was given, and which options this version lacks."""
    supported = settings["fastten_options"]
    missing = [o for o in ("alpha", "early_stopping") if o not in supported]
    given = [f"activation={settings['activation']!r}", "task"]
    if "alpha" in supported:
        given.append("alpha" + (" (chosen from the grid)" if len(settings["alphas"]) > 1 else
                                f"={settings['alphas'][0]:g}"))
    if "early_stopping" in supported:
        given.append("early_stopping=" + ({"on": "True", "off": "False"}.get(settings["early_stopping"]) or
                                          f"its default ({defaults.get('early_stopping')})"))
    text = f"fastten.fit(X, y, width, {', '.join(given)}, random_state=seed) on the raw features"
    if settings["time_limit"] and "callback" in supported:
        text += (f", its refinement stopped (callback) at the first step after {settings['time_limit']:g} s of a "
                 "fit: such scores are marked *")
    if missing:
        text += f"; this fastten.fit takes no {', '.join(missing)}: run without"
    return text


def warm_up(settings, methods):
    """One fit of every method per task on a small synthetic problem
    (compilation and imports, excluded from the timings); exceptions ignored."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    targets = {"regression": X @ rng.standard_normal(5), "classification": (X[:, 0] > 0).astype(int)}
    for task, y in targets.items():
        for method in methods:
            fit_and_score(make_model(method, task, 2, settings, settings["alphas"][0], 0), task, X, y, X, y)


def run_dataset(name, methods, widths, settings, splits, seed):
    """Every method, width and split of one data set: a list of fit records."""
    task, default_widths = DATASETS[name]
    X, y = load(name)
    fits = []
    for i in range(splits):
        start = time.perf_counter()
        X_train, X_test, y_train, y_test = split(X, y, task, seed + i)
        for method in methods:
            for width in [WIDTHLESS] if method == LINEAR else widths or default_widths:
                record = fit_selected(method, task, width, settings, X_train, y_train, X_test, y_test, seed + i)
                fits.append(dict(record, bench="real", kind="fit", dataset=name, task=task, width=width,
                                 method=method, split=i, seed=seed + i))
        print(f"  {name}: split {i + 1}/{splits} in {time.perf_counter() - start:.1f} s", file=sys.stderr,
              flush=True)
    return fits


def _shape(name):
    X, y = load(name)
    outputs = "" if y.ndim == 1 else f", {y.shape[1]} outputs"
    classes = f", {len(np.unique(y))} classes" if DATASETS[name][0] == "classification" else ""
    return f"{X.shape[0]}, {X.shape[1]}{outputs}{classes}"


def run(args):
    import fastten

    t_start = time.perf_counter()
    threads = args.threads
    load0 = _loadavg()
    parameters = inspect.signature(fastten.fit).parameters
    defaults = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    settings = {"activation": args.activation, "alphas": sorted(args.alpha),
                "early_stopping": args.early_stopping, "fastten_options": sorted(parameters),
                "time_limit": args.time_limit}
    machine = T.machine_info()
    versions = _versions()
    grid = len(settings["alphas"]) > 1
    alpha_note = (f"alpha chosen per split and method from {{{', '.join(f'{a:g}' for a in settings['alphas'])}}} "
                  "by the score on an inner validation split (25% of the training rows, same seed), then refitted "
                  "on all training rows: the same procedure for fastten and both MLPs" if grid else
                  f"alpha={settings['alphas'][0]:g} for fastten and both MLPs")
    header = [
        "# fastten on scikit-learn's bundled data sets", "",
        f"- command: `{command_line(args)}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %z')}",
        f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}; "
        f"{threads} thread{'s' if threads > 1 else ''} (BLAS, Numba); Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- fastten: {fastten_source()}; {_fastten_settings_note(settings, defaults)}",
        f"- scikit-learn MLPs: StandardScaler on X (and on the regression targets, TransformedTargetRegressor), "
        f"hidden_layer_sizes=(width,), activation={SK_ACTIVATION[args.activation]!r}, max_iter={MLP_MAX_ITER}, "
        f"random_state=seed, early stopping {args.early_stopping} (adam only), other options default; {alpha_note}",
        f"- linear: StandardScaler, then RidgeCV (alphas 1e-3..1e3, 13 values, efficient leave-one-out) or "
        f"LogisticRegression (default C, max_iter={LOGISTIC_MAX_ITER})",
        f"- {args.splits} random splits per data set (test_size {TEST_SIZE:g}, stratified for classification), "
        f"split i and every fit on it seeded with {args.seed} + i; score on the test rows: R^2 (mean over outputs "
        "for linnerud) or accuracy; median and interquartile range over the splits that scored; fit time: the "
        "final fit (after a warm-up fit of every method, excluded); refused/failed: fit raised / predicting or "
        "scoring raised, messages below the table",
    ]
    busy = busy_warning(load0, threads)
    header += [f"- warning: {busy}"] if busy else []
    records, fits = [], []
    with limit_threads(threads):
        warm_up(settings, args.methods)
        for name in args.datasets:
            fits += run_dataset(name, args.methods, args.widths, settings, args.splits, args.seed)
    rows = summarise(fits)
    shapes = {name: _shape(name) for name in args.datasets}
    for r in rows:
        r["shape"] = shapes[r["dataset"]]
    results = verdicts(rows)
    lines = header + ["", table(rows), ""]
    lines += [f"Against the bar of issue #12 (fastten's best width within {BAR:g} of the best of scikit-learn's "
              "MLPs and the linear model, or above; medians over the splits; rows scored on every split only):", ""]
    lines += [verdict_line(v, [r for r in rows if r["dataset"] == v["dataset"]]) for v in results]
    notes = message_lines(rows)
    if notes:
        lines += ["", "Refusals, failures and warnings (runs out of the splits):", ""] + notes
    total = time.perf_counter() - t_start
    lines += ["", f"Total {total:.0f} s; load average before/after: {load0} / {_loadavg()}."]
    records += fits + [dict(r, bench="real", kind="row") for r in rows]
    records += [dict(v, bench="real", kind="verdict") for v in results]
    records.append({"bench": "real", "kind": "run", "command": command_line(args), "threads": threads,
                    "splits": args.splits, "seed": args.seed, "settings": settings, "total_s": total,
                    "fastten": fastten_source(), "versions": versions, **machine})
    path = T.write_jsonl(args.json, records)
    print("\n".join(lines), flush=True)
    print(f"Results: {path}", file=sys.stderr, flush=True)
    return 0
