"""The accuracy cost of one pass: ``fit(one_pass=True)`` against the multi-pass fit out of core.

``python -m bench onepass`` draws planted sigmoid networks
(``fastten.datasets.make_planted_network``, as ``python -m bench recovery``
draws them: x ~ N(0, I), unit-norm A1 columns, b1 ~ U[-1, 1]; labels
noise-free or with Gaussian noise of standard deviation ``--noise``) and
fits each seed's rows, given as a callable of chunks, twice: multi-pass (the
out-of-core route, which reads the chunks about 30 times and refines last
on every row) and one_pass=True (read once; it refines on a sample). For
each it reports the tensor stage's network (before refinement: the network
fit hands its callback at stage "init", which is what refine=False
returns) and the refined one: worst matched |cos| against the planted A1
and test MSE / Var(f) on fresh rows against the noise-free outputs, with
the passes and, for one pass, how many directions the pilot's spectrum
supported. A third line per seed is an ablation: the one-pass tensor stage
without its full-space step (``fastten._one_pass. FULL_STEP_COS`` set above
1 for that fit, so every direction stays in the pilot's subspace;
refine=False): what the pilot's subspace alone costs. Accuracy only: no
times. Writes onepass.jsonl and onepass.md under ``--out``.
"""

import argparse
from pathlib import Path
import warnings

import numpy as np

from fastten import _one_pass, fit
from fastten.datasets import make_planted_network

from . import _timing as T
from ._peers import worst_cos
from .real import _nonnegative_float
from .sgd import _positive

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

CHUNK = 65_536


def add_parser(subparsers):
    """Register the 'onepass' sub-command."""
    p = subparsers.add_parser("onepass", help="accuracy of fit(one_pass=True) against the multi-pass fit",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=_positive(int), default=1_000_000, help="training rows")
    p.add_argument("--d", type=_positive(int), default=50, help="features")
    p.add_argument("--k", type=_positive(int), default=10, help="hidden units (planted and fitted)")
    p.add_argument("--seeds", type=_positive(int), default=3, help="seeds 0 .. seeds - 1")
    p.add_argument("--noise", type=_nonnegative_float, default=0.0, help="standard deviation of the labels' Gaussian noise")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="directory for onepass.jsonl, .md")
    p.set_defaults(func=run)


def _chunks(X, y):
    def chunks():
        for i in range(0, X.shape[0], CHUNK):
            yield X[i:i + CHUNK], y[i:i + CHUNK]
    return chunks


def _scores(net, model):
    mse = np.mean((model.predict(net.X_test) - net.f_test) ** 2) / np.var(net.f_test)
    return worst_cos(net.A1, model.A1), float(mse)


def fit_both(net, k, seed):
    """{mode: record} for the multi-pass and the one-pass fit of net's rows."""
    out = {}
    for mode, one_pass in (("multi-pass", False), ("one pass", True), ("one pass, no full-space step", True)):
        initial = []

        def keep_initial(network, info):
            if info["stage"] == "init":
                initial.append(network)

        ablation = mode.endswith("no full-space step")
        step = _one_pass.FULL_STEP_COS
        try:
            _one_pass.FULL_STEP_COS = 2.0 if ablation else step
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # recorded in the diagnostics; the table reports the outcome
                model = fit(_chunks(net.X, net.y), None, k, one_pass=one_pass, random_state=seed,
                            callback=keep_initial, refine=not ablation)
        finally:
            _one_pass.FULL_STEP_COS = step
        diag = model.diagnostics
        out[mode] = {"tensor": _scores(net, initial[0]), "refined": None if ablation else _scores(net, model),
                     "passes": round(sum(diag["data_passes"].values()), 1),
                     "pilot_supported": diag["one_pass"]["pilot_supported"] if one_pass else None,
                     "supported": diag["suggested_n_hidden"]}
    return out


def run(args):
    labels = "noise-free" if args.noise == 0 else f"label noise {args.noise:g}"
    lines = [f"- command: `python -m bench onepass --n {args.n} --d {args.d} --k {args.k} --seeds {args.seeds} "
             f"--noise {args.noise:g}`",
             f"- planted sigmoid networks, {labels}, d={args.d}, k={args.k}, n={args.n} in chunks of {CHUNK} rows",
             "- test MSE / Var(f): on 10,000 fresh rows, against the noise-free outputs", ""]
    print("\n".join(lines), flush=True)
    rows, records = [], []
    for seed in range(args.seeds):
        net = make_planted_network(args.n, args.d, args.k, noise=args.noise, random_state=seed)
        for mode, rec in fit_both(net, args.k, seed).items():
            pilot = "" if rec["pilot_supported"] is None else f" ({rec['pilot_supported']})"
            refined = rec["refined"] or (None, None)
            rows.append([seed, mode, f"{rec['passes']:g}", f"{rec['tensor'][0]:.4f}", f"{rec['tensor'][1]:.2e}",
                         T.fmt(refined[0], ".6f"), T.fmt(refined[1], ".2e"), f"{rec['supported']}{pilot}"])
            records.append(dict(rec, seed=seed, mode=mode, n=args.n, d=args.d, k=args.k, noise=args.noise,
                                bench="onepass"))
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    lines += [T.markdown_table(["seed", "fit", "passes", "tensor stage: worst cos", "tensor stage: MSE/Var",
                                "refined: worst cos", "refined: MSE/Var", "directions supported (pilot)"], rows), ""]
    path = T.write_jsonl(args.out / "onepass.jsonl", records + [dict(T.machine_info(), bench="onepass", kind="run")])
    (args.out / "onepass.md").write_text("\n".join(lines) + "\n", encoding="ascii", errors="replace")
    print("\n".join(lines[4:]) + f"\nResults: {path}, {args.out / 'onepass.md'}", flush=True)
    return 0
