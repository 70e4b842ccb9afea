"""Data out of core: a planted data set fitted from disk, and Dask against memory.

``python -m bench scale`` writes a noise-free planted sigmoid network's data
set to a folder, X as float32 ``X.npy`` (n x d) and y as float64 ``y.npy``,
block by block, never holding it whole in memory: the planted weights come
from ``fastten.datasets.make_planted_network`` drawn once at one row (same
seed, same A1, b1, a2, b2), the rows are drawn block by block from a seeded
Generator of their own (x ~ N(0, I), as make_planted_network draws them) and
the labels y = a2^T sigma(A1^T x + b1) + b2 are computed here, per block, on
the float32 rows in float64 (``PlantedNetwork.output``). In a child process
it fits the ``.npy`` path (memory-mapped) and reports the child's peak
resident memory (VmHWM of /proc/<pid>/status, the whole process: Python,
the compiled kernels, the labels and the fit), the fit's time (after a
warm-up fit of a tiny file by the same route: compilation excluded),
``diagnostics["data_passes"]``, the worst matched |cos| against the planted
A1 and the test MSE / Var(f) on fresh rows. "Exact" recovery is the bar of
``python -m bench recovery``: worst |cos| >= 0.9999 and MSE / Var <= 1e-6.
Then, on a data set that fits in memory (--compare-n rows, same d and k),
the same fit three ways, each in a child process: X loaded in memory, X
memory-mapped, and X as a dask array read from the file by a
``dask.distributed.LocalCluster`` of 2 worker processes (1 thread each;
skipped when ``distributed`` is not installed). One run of each, no medians:
a fit of 10^7 rows is long.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import _timing as T
from .sgd import _loadavg, _positive, fastten_source

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
GEN_ROWS = 65_536  # rows per block written
WARM_ROWS = 4000  # rows of the warm-up file
# Spawn keys of the row streams (make_planted_network's weights use key 1).
TRAIN_STREAM, TEST_STREAM, COMPARE_STREAM, WARM_STREAM = 2, 3, 4, 5
EXACT_COS, EXACT_MSE = 0.9999, 1e-6


def add_parser(subparsers):
    """Register the 'scale' sub-command."""
    p = subparsers.add_parser("scale", help="fit a planted data set from disk (memory-mapped); Dask against memory",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=_positive(int), default=10_000_000, help="rows of the data set on disk")
    p.add_argument("--d", type=_positive(int), default=100, help="features")
    p.add_argument("--k", type=_positive(int), default=10, help="hidden units (planted and fitted)")
    p.add_argument("--compare-n", type=_nonnegative_int, default=1_000_000,
                   help="rows of the data set fitted in memory, memory-mapped and on Dask (0: skip)")
    p.add_argument("--rss-bar", type=_positive(float), default=1000.0,
                   help="peak resident memory (MB) the memory-mapped fit must stay under")
    p.add_argument("--seed", type=int, default=0, help="seed of the planted network and of its rows")
    p.add_argument("--fit-seed", type=int, default=0, help="random_state of fit")
    p.add_argument("--block-rows", type=_positive(int), default=65_536,
                   help="fit's block_rows, and the Dask row chunk")
    p.add_argument("--test-rows", type=_positive(int), default=100_000, help="fresh rows for the test error")
    p.add_argument("--no-dask", action="store_true", help="leave the Dask LocalCluster fit out")
    p.add_argument("--folder", type=Path, metavar="DIR",
                   help="where the data sets are written (default: a temporary directory under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the data files (default: deleted at the end)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="directory for scale.jsonl, scale.md")
    p.set_defaults(func=run)
    return p


def _nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


# ----------------------------------------------------------------------------
# The data set, written block by block
# ----------------------------------------------------------------------------

def planted_weights(d, k, seed):
    """The planted network of make_planted_network(seed): drawn at one row,
    its rows thrown away."""
    from fastten.datasets import make_planted_network

    return make_planted_network(1, d, k, n_test=1, random_state=seed)


def row_stream(seed, stream):
    """The Generator of one row stream, apart from the weights' stream."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _npy_writer(path, shape, dtype):
    """An open file with the .npy header of a C-order array written."""
    fh = open(path, "wb")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(fh, header)
    return fh


def write_data(folder, name, net, n, seed, stream):
    """X (n, d) float32 and y (n,) float64 of ``net`` as ``name``_X.npy and
    ``name``_y.npy, GEN_ROWS rows at a time. Returns the two paths."""
    d = net.A1.shape[0]
    rng = row_stream(seed, stream)
    x_path, y_path = folder / f"{name}_X.npy", folder / f"{name}_y.npy"
    with _npy_writer(x_path, (n, d), np.float32) as fx, _npy_writer(y_path, (n,), np.float64) as fy:
        for i in range(0, n, GEN_ROWS):
            X = rng.standard_normal((min(GEN_ROWS, n - i), d), dtype=np.float32)
            fx.write(X.tobytes())
            fy.write(net.output(X.astype(np.float64)).tobytes())
    return x_path, y_path


def fresh_rows(net, rows, seed):
    """Fresh rows (float32, as the training rows) and their noise-free outputs."""
    X = row_stream(seed, TEST_STREAM).standard_normal((rows, net.A1.shape[0]), dtype=np.float32)
    return X, net.output(X.astype(np.float64))


# ----------------------------------------------------------------------------
# The child process: one fit, its peak memory
# ----------------------------------------------------------------------------

def _status_mb(field, pid="self"):
    """A field of /proc/<pid>/status in MB, or None off Linux."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / T.KIB_PER_MB
    except OSError:
        return None
    return None


def _peak_mb():
    """This process's peak resident memory (VmHWM), else ru_maxrss."""
    peak = _status_mb("VmHWM")
    if peak is None:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / T.KIB_PER_MB
    return peak


def read_rows(path, start, stop):
    """Rows start:stop of an .npy file, copied out of a memory map (a Dask
    task: each worker reads its own chunks from the file)."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def dask_rows(path, block_rows):
    """The .npy file as a dask array of row chunks, each read by its task."""
    import dask
    import dask.array as da

    n, d = np.load(path, mmap_mode="r").shape
    read = dask.delayed(read_rows, pure=True)
    return da.concatenate([da.from_delayed(read(str(path), i, min(n, i + block_rows)),
                                           shape=(min(n, i + block_rows) - i, d), dtype=np.float32)
                           for i in range(0, n, block_rows)])


def _fit(route, x_path, y_path, k, seed, block_rows):
    import fastten

    y = np.load(y_path)
    if route == "memory":
        X = np.load(x_path)
    elif route == "memmap":
        X = str(x_path)
    else:
        X = dask_rows(x_path, block_rows)
    return fastten.fit(X, y, k, random_state=seed, block_rows=block_rows)


def child(spec):
    """Warm up, then fit once by ``spec["route"]``; save the network and
    print one JSON line with the time and the memory figures."""
    import contextlib
    import warnings

    route = spec["route"]
    cluster = contextlib.nullcontext()
    if route == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                               host="127.0.0.1")
    with cluster as c, (Client(c) if route == "dask" else contextlib.nullcontext()) as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(route, spec["warm_X"], spec["warm_y"], spec["k"], spec["seed"], min(spec["block_rows"], 1024))
            before = _status_mb("VmRSS")
            t0 = time.perf_counter()
            model = _fit(route, spec["X"], spec["y"], spec["k"], spec["seed"], spec["block_rows"])
            seconds = time.perf_counter() - t0
            peak = _peak_mb()
        workers = None
        if client is not None:
            workers = sorted(client.run(_peak_mb).values())
    model.save(spec["model"])
    diag = model.diagnostics
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "rss_before_fit_mb": before,
                      "worker_peak_rss_mb": workers, "data_passes": diag["data_passes"], "rows": diag["rows"],
                      "times": diag["times"], "warnings": sorted({str(w.message) for w in caught})}))


def run_child(route, x_path, y_path, warm, k, seed, block_rows, model_path):
    """One fit in a child process (started from the checkout, so it imports
    this fastten): its JSON record, or a record of the failure."""
    spec = {"route": route, "X": str(x_path), "y": str(y_path), "warm_X": str(warm[0]), "warm_y": str(warm[1]),
            "k": k, "seed": seed, "block_rows": block_rows, "model": str(model_path)}
    code = "import json, sys; from bench.scale import child; child(json.loads(sys.argv[1]))"
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"route": route, "failed": f"exit code {result.returncode}: {tail[0]}",
                "wall_s": time.perf_counter() - t0}
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record.update(route=route, wall_s=time.perf_counter() - t0)
    return record


# ----------------------------------------------------------------------------
# Scoring and the report
# ----------------------------------------------------------------------------

def score(record, model_path, net, X_test, f_test):
    """Worst matched |cos| and test MSE / Var(f) of the saved network."""
    from fastten import TwoLayerNet

    from ._peers import worst_cos

    if "failed" in record:
        return None
    model = TwoLayerNet.load(model_path)
    record["worst_cos"] = worst_cos(net.A1, np.asarray(model.A1))
    record["relative_mse"] = float(np.mean((model.predict(X_test) - f_test) ** 2) / np.var(f_test))
    record["exact"] = record["worst_cos"] >= EXACT_COS and record["relative_mse"] <= EXACT_MSE
    record["passes_total"] = float(sum(record["data_passes"].values()))
    return model


def parameter_gap(a, b):
    """Largest parameter difference over the largest parameter (A1, b1, a2, b2)."""
    x = np.concatenate([np.ravel(getattr(a, name)) for name in ("A1", "b1", "a2", "b2")])
    z = np.concatenate([np.ravel(getattr(b, name)) for name in ("A1", "b1", "a2", "b2")])
    return float(np.abs(x - z).max() / np.abs(x).max())


ROUTES = {"memmap": "memory-mapped .npy", "memory": "in memory", "dask": "Dask LocalCluster, 2 workers"}


def _passes_text(passes):
    return ", ".join(f"{stage} {value:g}" for stage, value in passes.items() if value)


def table(records):
    headers = ["data set", "route", "fit (s)", "peak RSS (MB)", "RSS before fit (MB)", "workers' peak RSS (MB)",
               "data passes", "worst \\|cos\\|", "test MSE / Var(f)", "exact", "gap to in memory"]
    body = []
    for r in records:
        size = f"{r['n']:,} x {r['d']}, k={r['k']}"
        if "failed" in r:
            body.append([size, ROUTES[r["route"]], "failed: " + r["failed"]] + ["-"] * (len(headers) - 3))
            continue
        workers = " / ".join(f"{v:.0f}" for v in r["worker_peak_rss_mb"]) if r["worker_peak_rss_mb"] else "-"
        body.append([size, ROUTES[r["route"]], f"{r['seconds']:.1f}", f"{r['peak_rss_mb']:.0f}",
                     T.fmt(r["rss_before_fit_mb"], ".0f"), workers,
                     f"{r['passes_total']:.2f} ({_passes_text(r['data_passes'])})", f"{r['worst_cos']:.6f}",
                     f"{r['relative_mse']:.1e}", "yes" if r["exact"] else "no", T.fmt(r.get("gap"), ".1e")])
    return T.markdown_table(headers, body, "llrrrrlrrlr")


def verdicts(big, compare, rss_bar):
    """Plain sentences on the bars."""
    lines = []
    if big is not None:
        if "failed" in big:
            lines.append(f"- {big['n']:,} x {big['d']} memory-mapped fit FAILED: {big['failed']}")
        else:
            lines.append(f"- {big['n']:,} x {big['d']} memory-mapped: peak RSS {big['peak_rss_mb']:.0f} MB, bar "
                         f"< {rss_bar:g} MB: {'met' if big['peak_rss_mb'] < rss_bar else 'NOT met'}; exact recovery "
                         f"(worst |cos| >= {EXACT_COS}, MSE / Var <= {EXACT_MSE:g}): "
                         f"{'yes' if big['exact'] else 'NO'}")
    by_route = {r["route"]: r for r in compare if "failed" not in r}
    memory = by_route.get("memory")
    for route in ("memmap", "dask"):
        other = by_route.get(route)
        if memory is not None and other is not None:
            ratio = other["seconds"] / memory["seconds"]
            bar = f" (bar: within 3x: {'met' if ratio <= 3 else 'NOT met'})" if route == "memmap" else ""
            lines.append(f"- {other['n']:,} x {other['d']}: {ROUTES[route]} {other['seconds']:.1f} s against in "
                         f"memory {memory['seconds']:.1f} s, {ratio:.2f}x{bar}")
    return lines


def run(args):
    t_start = time.perf_counter()
    machine = T.machine_info()
    parts = ["python -m bench scale", f"--n {args.n}", f"--d {args.d}", f"--k {args.k}",
             f"--compare-n {args.compare_n}", f"--rss-bar {args.rss_bar:g}"]
    parts += [f"--seed {args.seed}"] if args.seed else []
    parts += [f"--fit-seed {args.fit_seed}"] if args.fit_seed else []
    parts += ["--no-dask"] if args.no_dask else []
    command = " ".join(parts)
    dask_ok = not args.no_dask and args.compare_n > 0
    if dask_ok:
        try:
            import distributed  # noqa: F401
        except ImportError:
            dask_ok = False
            print("- dask.distributed is not installed (the dask extra adds it): the Dask fit is left out",
                  flush=True)
    load0 = _loadavg()
    lines = ["# fastten fit: data out of core", "", f"- command: `{command}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M %z')}",
             f"- machine: {machine['cpu_model']}, os.cpu_count() = {machine['cpu_count']}",
             f"- fastten: {fastten_source()}",
             f"- planted sigmoid network, noise-free, x ~ N(0, I) stored as float32, labels float64; "
             f"fit(X, y, k={args.k}, random_state={args.fit_seed}, block_rows={args.block_rows}), defaults "
             f"otherwise (refined); one fit per route, each in a child process after a warm-up fit of "
             f"{WARM_ROWS} rows by the same route (compilation excluded); test error on {args.test_rows:,} "
             f"fresh rows"]
    print("\n".join(lines), flush=True)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="fastten-scale-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    made_folder = args.folder is None
    records = []
    try:
        net = planted_weights(args.d, args.k, args.seed)
        X_test, f_test = fresh_rows(net, args.test_rows, args.seed)
        warm = write_data(folder, "warm", net, WARM_ROWS, args.seed, WARM_STREAM)
        t0 = time.perf_counter()
        big_x, big_y = write_data(folder, "big", net, args.n, args.seed, TRAIN_STREAM)
        write_s = time.perf_counter() - t0
        print(f"- wrote {big_x} ({big_x.stat().st_size / 1e9:.2f} GB) and {big_y.name} in {write_s:.0f} s",
              flush=True)
        big = run_child("memmap", big_x, big_y, warm, args.k, args.fit_seed, args.block_rows, folder / "big.npz")
        big.update(n=args.n, d=args.d, k=args.k, data_set="big", write_s=write_s)
        score(big, folder / "big.npz", net, X_test, f_test)
        records.append(big)
        print(table([big]), flush=True)
        if not args.keep and args.n * args.d * 4 > 3e8:  # free the page cache's copy before the comparison's files
            big_x.unlink()
        compare = []
        if args.compare_n:
            cx, cy = write_data(folder, "compare", net, args.compare_n, args.seed, COMPARE_STREAM)
            models = {}
            for route in ("memory", "memmap") + (("dask",) if dask_ok else ()):
                record = run_child(route, cx, cy, warm, args.k, args.fit_seed, args.block_rows,
                                   folder / f"compare_{route}.npz")
                record.update(n=args.compare_n, d=args.d, k=args.k, data_set="compare")
                models[route] = score(record, folder / f"compare_{route}.npz", net, X_test, f_test)
                compare.append(record)
                print(f"  {ROUTES[route]}: " + (record["failed"] if "failed" in record else
                                                 f"{record['seconds']:.1f} s"), flush=True)
            for record in compare:
                if models.get("memory") is not None and models.get(record["route"]) is not None:
                    record["gap"] = parameter_gap(models["memory"], models[record["route"]])
            records += compare
    finally:
        if made_folder and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        elif not args.keep:
            for path in folder.glob("*"):
                if path.name.startswith(("warm_", "big", "compare")):
                    path.unlink()
    lines += ["", table(records), ""] + verdicts(records[0], records[1:], args.rss_bar)
    lines += ["- peak RSS: VmHWM of the child process over its whole life (interpreter, kernels, labels, "
              "warm-up, fit); for Dask the client process's, and each worker's beside it",
              "- data passes: diagnostics[\"data_passes\"], in passes over all n rows, total (per stage)",
              "- gap to in memory: largest parameter difference over the largest parameter; both refine last on "
              "all rows, the out-of-core fits first on rows gathered in one pass, the in-memory fit on a subsample "
              "(docs/api.md, \"Data out of core\")",
              f"- load average before/after: {load0} / {_loadavg()}; total {time.perf_counter() - t_start:.0f} s; "
              "the machine is shared, so times carry the other users' load"]
    warnings_seen = sorted({w for r in records for w in r.get("warnings", [])})
    lines += [f"- warning: {w}" for w in warnings_seen]
    if args.keep:
        lines.append(f"- data kept in {folder}")
    print("\n".join(lines[7:]), flush=True)
    run_record = {"bench": "scale", "kind": "run", "command": command, "total_s": time.perf_counter() - t_start,
                  **machine}
    path = T.write_jsonl(args.out / "scale.jsonl", [dict(r, bench="scale") for r in records] + [run_record])
    (args.out / "scale.md").write_text("\n".join(lines) + "\n", encoding="ascii", errors="replace")
    print(f"\nResults: {path}, {args.out / 'scale.md'}", flush=True)
    return 0 if all("failed" not in r for r in records) else 1
