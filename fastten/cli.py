"""The ``fastten`` command line: fit, predict, info, demo.

    fastten fit train.csv --label-column price -k 10 -o model.npz
    fastten predict model.npz test.csv -o predictions.csv
    fastten info model.npz [--json]
    fastten demo [--quick]

Also ``python -m fastten``. ``main(argv)`` returns the exit code: 0 on
success, 2 on a usage error (argparse's message and usage), 1 on any other
error with one line on stderr (a missing or unreadable file, a wrong column,
a non-numeric or non-finite value, a foreign or damaged model file, an
option value that ``fastten.fit`` refuses: its message, which names the
parameter, is relayed). Warnings raised during a command are printed on
stderr, one line each. ``--traceback`` lets an error propagate, for
debugging. The data formats are described in ``fastten._io`` and in
docs/api.md ("Command line").
"""

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings

import numpy as np

from . import __version__
from ._io import OUTPUT_SUFFIXES, DataError, Table, check_suffix, open_features, read_data, read_labels, write_table
from .activations import ACTIVATIONS
from .decomposition import METHODS
from .network import FORMAT, TwoLayerNet
from .nnlift import BIAS_METHODS, INITS, INPUT_MODELS, TASKS, fit

__all__ = ["main"]

QUICK_DEMO = {"n_samples": 20_000, "n_features": 20, "n_hidden": 5}


class CommandError(Exception):
    """An error the command reports in one line (exit code 1)."""


def _one_line(text):
    return " ".join(str(text).split())


# ---------------------------------------------------------------- fit

def _threads(text):
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def _read_training_data(args):
    numeric = args.task != "classification"
    if args.out_of_core:
        if args.labels is None or args.label_column:
            raise CommandError("--out-of-core: expected the labels from --labels FILE.npy (the features' file is "
                               "read block by block, so it cannot hold them)")
        table = Table(open_features(args.data), read_labels(args.labels))
        if table.y.shape[0] != table.X.shape[0]:
            raise CommandError(f"--labels: expected {table.X.shape[0]} labels (one per row of {args.data}), "
                               f"got {table.y.shape[0]} in {args.labels}")
        return table
    if args.labels is not None:
        if args.label_column:
            raise CommandError("--labels and --label-column: expected one source of labels, got both")
        table = read_data(args.data, want_labels=False, x_key=args.x_key, delimiter=args.delimiter,
                          header=not args.no_header)
        table.y = read_labels(args.labels)
        if table.y.shape[0] != table.X.shape[0]:
            raise CommandError(f"--labels: expected {table.X.shape[0]} labels (one per row of {args.data}), "
                               f"got {table.y.shape[0]} in {args.labels}")
        return table
    if args.data.lower().endswith(".npy") and not args.label_column:
        raise CommandError(f"{args.data}: fitting needs labels: --label-column INDEX (a column of the array) "
                           f"or --labels FILE.npy")
    return read_data(args.data, label_columns=args.label_column or (), numeric_labels=numeric, x_key=args.x_key,
                     y_key=args.y_key, delimiter=args.delimiter, header=not args.no_header)


def _fit_summary(model, table, seconds, path):
    dg = model.diagnostics
    n, d = table.X.shape
    k = model.A1.shape[1]
    outputs = 1 if np.ndim(model.b2) == 0 else np.shape(model.b2)[0]
    task = "classification" if model.classes is not None else "regression"
    activation = model.activation if isinstance(model.activation, str) else model.activation.name
    lines = [f"fitted {k} {activation} unit{'s' if k != 1 else ''} to {n} rows x {d} features "
             f"({task}, {outputs} output{'s' if outputs != 1 else ''}) in {seconds:.2f} s"]
    if model.classes is not None:
        accuracy = float(np.mean(model.predict_class(table.X) == np.asarray(table.y)))
        lines.append(f"classes: {_shown_list(model.classes.tolist())}; training accuracy {accuracy:.4f}")
    elif dg.get("training_mse") is not None:
        y = np.asarray(table.y, dtype=np.float64)
        lines.append(f"training MSE {dg['training_mse']:.3e} (Var(y) {float(np.mean(np.var(y, axis=0))):.3e})")
    lines.append(f"tensor stage: engine {dg.get('engine')!r}, {len(dg.get('trusted_components', []))} "
                 f"direction(s) from the third moment, {dg.get('joint_directions', 0)} joint, "
                 f"{dg.get('second_order_directions', 0)} second-order; the moments support "
                 f"{dg.get('suggested_n_hidden')} unit(s)")
    lines.append(f"refinement: {dg.get('refinement_iterations', 0)} Levenberg-Marquardt iteration(s)")
    lines.append(f"wrote {path}")
    return lines


def _check_output(path, option):
    """Refuse an output path that cannot be written before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{option}: no such directory {folder!r} for {path}")
    if os.path.isdir(path):
        raise CommandError(f"{option}: expected a file name, got the directory {path}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CommandError(f"{option}: {path} is not writable")


def _cmd_fit(args, out):
    _check_output(args.output, "--output")
    table = _read_training_data(args)
    start = time.perf_counter()
    model = fit(table.X, table.y, args.n_hidden, activation=args.activation, task=args.task,
                input_model=args.input_model, init=args.init, method=args.method, bias_method=args.bias_method,
                refine=args.refine, alpha=args.alpha, early_stopping=args.early_stopping,
                validation_fraction=args.validation_fraction, n_iter_no_change=args.n_iter_no_change,
                ridge=args.ridge, max_iter=args.max_iter, n_rounds=args.n_rounds, random_state=args.random_state,
                n_threads=args.threads, blas_threads=args.blas_threads, verbose=min(args.verbose, 2),
                one_pass=args.one_pass, block_rows=args.block_rows)
    seconds = time.perf_counter() - start
    model.save(args.output)
    for line in _fit_summary(model, table, seconds, args.output):
        print(line, file=out)
    return 0


# ---------------------------------------------------------------- predict and info

def _load_model(path):
    """A saved network; any failure to read it is one ``CommandError`` line."""
    try:
        return TwoLayerNet.load(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # a foreign, truncated or corrupted file: numpy, zipfile, json raise many types
        raise CommandError(f"{path}: cannot read it as a fastten model ({type(exc).__name__}: "
                           f"{_one_line(exc)})") from None


def _cmd_predict(args, out):
    if args.output is not None:
        _check_output(args.output, "--output")
        check_suffix(args.output, OUTPUT_SUFFIXES, "predictions")
    model = _load_model(args.model)
    table = read_data(args.data, label_columns=args.label_column or (), want_labels=False, x_key=args.x_key,
                      delimiter=args.delimiter, header=not args.no_header)
    if args.proba:
        if model.classes is None:
            raise CommandError(f"--proba: expected a classification model, got a regression model in {args.model}")
        values = model.predict_proba(table.X)
        names = [f"proba_{label}" for label in model.classes.tolist()]
    elif args.raw or model.classes is None:
        values = model.predict(table.X)
        names = ["prediction"] if values.ndim == 1 else [f"output_{j}" for j in range(values.shape[1])]
    else:
        values = model.predict_class(table.X)
        names = ["prediction"]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise CommandError("the predictions are not finite (the features may be too large for the network)")
    write_table(values, names, stream=out, path=args.output)
    return 0


def _finite_or_none(value):
    """The model's record as strict JSON: NaN and infinity become null."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _model_record(path, model):
    outputs = 1 if np.ndim(model.b2) == 0 else int(np.shape(model.b2)[0])
    activation = model.activation if isinstance(model.activation, str) else model.activation.name
    return {
        "path": str(path), "format": FORMAT, "activation": activation,
        "n_features": int(model.A1.shape[0]), "n_hidden": int(model.A1.shape[1]), "n_outputs": outputs,
        "task": "regression" if model.classes is None else "classification",
        "classes": None if model.classes is None else model.classes.tolist(),
        "diagnostics": model.diagnostics,
    }


def _shown_list(values, limit=10):
    shown = ", ".join(str(value) for value in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _number(value, spec=".3g"):
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _info_lines(record):
    """A human-readable account of a model and whatever of its diagnostics it holds."""
    lines = [f"{record['path']}: {record['format']}",
             f"network: {record['n_features']} inputs -> {record['n_hidden']} {record['activation']} units -> "
             f"{record['n_outputs']} output{'s' if record['n_outputs'] != 1 else ''} ({record['task']})"]
    if record["classes"] is not None:
        lines.append(f"classes: {_shown_list(record['classes'])}")
    dg = record["diagnostics"] if isinstance(record["diagnostics"], dict) else {}
    if not dg:
        lines.append("diagnostics: none recorded")
        return lines

    def have(*keys):
        return all(key in dg for key in keys)

    if have("init", "input_model"):
        lines.append(f"fit: init {dg['init']}, input model {dg['input_model']}, bias method "
                     f"{dg.get('bias_method')}, loss {dg.get('loss')}, alpha {_number(dg.get('alpha'))}")
    if have("engine"):
        trusted = dg.get("trusted_components")
        lines.append(f"tensor stage: engine {dg['engine']}, moment orders {dg.get('moment_orders')}, "
                     f"{len(trusted) if isinstance(trusted, list) else trusted} direction(s) from the third moment, "
                     f"{dg.get('joint_directions')} joint, {dg.get('second_order_directions')} second-order; "
                     f"the moments support {dg.get('suggested_n_hidden')} unit(s)")
    if isinstance(dg.get("component_weights"), list):
        lines.append(f"component weights: {_shown_list([_number(w) for w in dg['component_weights']])}")
    if isinstance(dg.get("inputs"), dict):
        inputs = dg["inputs"]
        lines.append(f"inputs: rank {inputs.get('rank')}, condition number {_number(inputs.get('condition_number'))}, "
                     f"constant features {inputs.get('constant_features')}, null directions "
                     f"{inputs.get('null_directions')}")
    if have("refinement_iterations"):
        lines.append(f"refinement: {dg['refinement_iterations']} Levenberg-Marquardt iteration(s), "
                     f"{dg.get('refinement_cg_iterations')} CG iteration(s); training loss "
                     f"{_number(dg.get('training_loss'))}, training MSE {_number(dg.get('training_mse'))}, "
                     f"residual structure {_number(dg.get('residual_structure'))}")
    if isinstance(dg.get("early_stopping"), dict):
        stop = dg["early_stopping"]
        lines.append(f"early stopping: {stop.get('validation_rows')} validation rows, best validation loss "
                     f"{_number(stop.get('best_validation_loss'))}, stopped early {stop.get('stopped_early')}")
    for key, title in (("data_passes", "passes over the data"), ("times", "seconds")):
        per_stage = dg.get(key)
        if isinstance(per_stage, dict) and per_stage:
            lines.append(f"{title}: " + ", ".join(f"{stage} {_number(value)}" for stage, value in per_stage.items()))
    if "warnings" in dg:
        found = dg["warnings"] if isinstance(dg["warnings"], list) else [dg["warnings"]]
        lines.append("warnings: none" if not found else f"warnings: {len(found)}")
        lines.extend(f"  {_one_line(item)}" for item in found)
    return lines


def _cmd_info(args, out):
    model = _load_model(args.model)
    record = _model_record(args.model, model)
    if args.json:
        print(json.dumps(_finite_or_none(record), indent=2, allow_nan=False), file=out)
    else:
        for line in _info_lines(record):
            print(line, file=out)
    return 0


# ---------------------------------------------------------------- demo

def _cmd_demo(args, out):
    from . import demo  # noqa: PLC0415 (scipy's assignment solver only when asked)

    if args.output is not None:
        _check_output(args.output, "--output")
    sizes = dict(QUICK_DEMO) if args.quick else {}
    for key in ("n_samples", "n_features", "n_hidden"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    result = demo.run(n=sizes.get("n_samples", 100_000), d=sizes.get("n_features", 50),
                      k=sizes.get("n_hidden", 10), seed=args.random_state, verbose=min(args.verbose, 2))
    for line in demo.summary(result):
        print(line, file=out)
    if args.output is not None:
        result["model"].save(args.output)
        print(f"wrote {args.output}", file=out)
    return 0


# ---------------------------------------------------------------- parser

def _data_options(parser, labels_help):
    group = parser.add_argument_group("data files")
    group.add_argument("--label-column", action="append", metavar="COLUMN",
                       help=labels_help + " Repeat it for several outputs.")
    group.add_argument("--x-key", default="X", metavar="KEY", help=".npz: the features' array name (default: X)")
    group.add_argument("--delimiter", default=",", help=".csv: the field separator (default: ',')")
    group.add_argument("--no-header", action="store_true",
                       help=".csv: the file has no header line; columns are named by their index 0, 1, ...")
    return group


def _parser():
    parser = argparse.ArgumentParser(
        prog="fastten",
        description="Train two-layer neural networks by tensor methods (NN-LIFT) from the shell.",
        epilog="Exit codes: 0 success, 1 error (one line on stderr), 2 usage error. See docs/api.md, "
               "'Command line'.")
    parser.add_argument("--version", action="version", version=f"fastten {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log fastten's progress on stderr: fit's stages and refinement rounds, with a bar "
                             "over the refinement iterations when tqdm is installed (fit's verbose=1; -vv: every "
                             "refinement iteration (verbose=2) and debug messages)")
    parser.add_argument("--traceback", action="store_true",
                        help="let an error propagate with its Python traceback (for debugging)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "fit", help="fit a network to a data file and save it",
        description="Fit f(x) = a2^T sigma(A1^T x + b1) + b2 to a data file by NN-LIFT and write the network "
                    "(TwoLayerNet.save). Data: .npy (labels from --label-column INDEX or --labels FILE.npy), "
                    ".npz (arrays X and y, or --x-key/--y-key), .csv with a header line (--label-column NAME), "
                    ".parquet with pandas installed (--label-column NAME).")
    p.add_argument("data", help="features and labels: .npy, .npz, .csv or .parquet")
    p.add_argument("-k", "--n-hidden", type=int, required=True, help="number of hidden units")
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="where to write the model file")
    group = _data_options(p, "the label column: a name (.csv, .parquet) or an index (any format; negative "
                             "counts from the end).")
    group.add_argument("--labels", metavar="FILE.npy", help="labels from a second .npy file, (n,) or (n, m)")
    group.add_argument("--y-key", default="y", metavar="KEY", help=".npz: the labels' array name (default: y)")
    options = p.add_argument_group("fit options (as fastten.fit's; its checks apply)")
    options.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid")
    options.add_argument("--task", choices=TASKS, default="regression",
                         help="classification: labels are classes (numbers or words)")
    options.add_argument("--input-model", choices=INPUT_MODELS, default="gaussian")
    options.add_argument("--init", choices=INITS, default="tensor")
    options.add_argument("--method", choices=METHODS, default="auto", help="decomposition engine")
    options.add_argument("--bias-method", choices=BIAS_METHODS, default="moments")
    options.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True,
                         help="run the Levenberg-Marquardt refinement (default: on)")
    options.add_argument("--alpha", type=float, default=0.0, help="L2 penalty of the refinement (default: 0)")
    options.add_argument("--early-stopping", action="store_true", help="hold out rows and keep the best step")
    options.add_argument("--validation-fraction", type=float, default=0.1)
    options.add_argument("--n-iter-no-change", type=int, default=10)
    options.add_argument("--ridge", type=float, default=1e-8)
    options.add_argument("--max-iter", type=int, default=50)
    options.add_argument("--n-rounds", type=int, default=6)
    options.add_argument("--random-state", type=int, default=None, metavar="SEED",
                         help="seed of every random choice (default: fresh entropy)")
    options.add_argument("--threads", type=_threads, default=None, metavar="N",
                         help="threads sharing each pass over the rows (default: every core; the result "
                              "does not depend on it)")
    options.add_argument("--blas-threads", type=_threads, default=1, metavar="N",
                         help="BLAS threads during the fit, or 'none' to leave BLAS alone (default: 1)")
    large = p.add_argument_group("data larger than memory (docs/api.md, 'Data out of core')")
    large.add_argument("--out-of-core", action="store_true",
                       help="DATA is a .npy file of features, memory-mapped and read block by block in each pass "
                            "(labels from --labels FILE.npy; regression, the options out of core supports)")
    large.add_argument("--one-pass", action="store_true",
                       help="read the rows once (fit's one_pass=True): for a stream that cannot be replayed")
    large.add_argument("--block-rows", type=int, default=65_536, metavar="N",
                       help="rows per block of the data passes (default: 65536)")
    p.set_defaults(run=_cmd_fit)

    p = commands.add_parser(
        "predict", help="predict with a saved model",
        description="Predict with a saved model: values (regression), classes (classification), --proba "
                    "(class probabilities) or --raw (the outputs, logits for classification). Written as CSV "
                    "with a header line to stdout, or to --output FILE (.csv or .npy).")
    p.add_argument("model", help="a model file written by 'fastten fit' (TwoLayerNet.save)")
    p.add_argument("data", help="features: .npy, .npz, .csv or .parquet")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (.csv or .npy) instead of stdout")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--proba", action="store_true", help="classification: one probability column per class")
    kind.add_argument("--raw", action="store_true", help="the network's outputs (logits for classification)")
    _data_options(p, "a column to drop before predicting (the labels of a training file): a name or an index.")
    p.set_defaults(run=_cmd_predict)

    p = commands.add_parser("info", help="describe a saved model and its diagnostics",
                            description="Describe a saved model: its shape, activation, classes and the "
                                        "diagnostics of its fit.")
    p.add_argument("model", help="a model file written by 'fastten fit' (TwoLayerNet.save)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the diagnostics as saved; NaN and infinity as null)")
    p.set_defaults(run=_cmd_info)

    p = commands.add_parser(
        "demo", help="fit a planted network end to end",
        description="Plant a sigmoid network (default d=50 inputs, k=10 units, n=100000 noise-free rows), fit "
                    "it, and report the time, the stages and the recovery of the planted weights.")
    p.add_argument("--quick", action="store_true",
                   help=f"a smaller problem (d={QUICK_DEMO['n_features']}, k={QUICK_DEMO['n_hidden']}, "
                        f"n={QUICK_DEMO['n_samples']})")
    p.add_argument("--n-samples", type=int, metavar="N")
    p.add_argument("--n-features", type=int, metavar="D")
    p.add_argument("--n-hidden", type=int, metavar="K")
    p.add_argument("--random-state", type=int, default=0, metavar="SEED", help="default: 0")
    p.add_argument("-o", "--output", metavar="MODEL", help="also save the fitted model")
    p.set_defaults(run=_cmd_demo)
    return parser


# ---------------------------------------------------------------- main

def _warning_lines(caught):
    seen, lines = set(), []
    for item in caught:
        line = f"warning: {item.category.__name__}: {_one_line(item.message)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


def _error_text(exc):
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return _one_line(exc) or type(exc).__name__


def _silence_stdout():
    """Point stdout at /dev/null, so that the interpreter's last flush does
    not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass


def main(argv=None):
    """Run the command line on argv (default: sys.argv[1:]); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2); argparse has written the message
        return exc.code if isinstance(exc.code, int) else 2
    prog = f"fastten {args.command}"
    logger = logging.getLogger("fastten")
    handler, level = None, logger.level
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastten: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = args.run(args, sys.stdout)
    except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as Unix tools do
        _silence_stdout()
        message, code = None, 1
    except (CommandError, DataError, ValueError, TypeError, OSError) as exc:
        if args.traceback:
            raise
        message, code = f"{prog}: error: {_error_text(exc)}", 1
    except KeyboardInterrupt:
        message, code = f"{prog}: interrupted", 130
    except Exception as exc:  # a bug: still one line, and the way to see more
        if args.traceback:
            raise
        message, code = (f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} (run with --traceback "
                         f"for details)", 1)
    else:
        message = None
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)
    for line in _warning_lines(caught):
        print(f"{prog}: {line}", file=sys.stderr)
    if message is not None:
        print(message, file=sys.stderr)
    return code
