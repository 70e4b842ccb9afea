"""Helpers shared by the benchmark sub-commands.

Wall-clock timing (median after a warm-up), peak resident-memory growth
during one call, a description of the machine and of the BLAS in effect,
Markdown tables and JSON-lines output. Nothing here prints.

Memory: Numba allocates outside the Python allocator, so tracemalloc does not
see kernel workspaces. :class:`PeakRSS` measures the growth of the process's
resident set instead: it resets the kernel's high-water mark (VmHWM) by
writing "5" to /proc/self/clear_refs when that is allowed, and in any case
samples VmRSS from a background thread about every millisecond; the peak is
the larger of the two, minus VmRSS just before the call. Memory that the call
takes from pages the process already holds (allocator free lists) is not
counted; large arrays are mapped afresh by the allocator and are counted.
"""

import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

KIB_PER_MB = 1024.0  # /proc reports kB (KiB); results are in MiB, called MB


# ----------------------------------------------------------------------------
# /proc/self memory figures
# ----------------------------------------------------------------------------

def _status_kib(*fields):
    """The given fields of /proc/self/status, in KiB (None if unavailable)."""
    found = dict.fromkeys(fields)
    with contextlib.suppress(OSError):  # no /proc here: the fields stay None
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] = int(value.split()[0])
    return found


def rss_kib():
    """Current resident set size in KiB, or None off Linux."""
    return _status_kib("VmRSS")["VmRSS"]


def _reset_hwm():
    """Reset VmHWM to the current RSS; True if the kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    # The reset only counts if it took effect: VmHWM must now equal VmRSS
    # (give or take pages faulted in between the two reads).
    now = _status_kib("VmRSS", "VmHWM")
    if now["VmRSS"] is None or now["VmHWM"] is None:
        return False
    return now["VmHWM"] - now["VmRSS"] < 1024


def hwm_reset_works():
    """Whether VmHWM can be reset here (checked once, by trying it)."""
    return _reset_hwm()


class PeakRSS:
    """Context manager: peak resident-memory growth during the block, in MB.

    After the block, ``extra_mb`` is the peak RSS minus the RSS on entry
    (None if /proc is unavailable) and ``method`` says how the peak was taken.
    """

    def __init__(self, interval=0.001):
        self.interval = interval
        self.extra_mb = None
        self.method = None
        self.samples = 0

    def _sample(self):
        peak = self._base
        while not self._stop.wait(self.interval):
            value = rss_kib()
            if value is not None and value > peak:
                peak = value
            self.samples += 1
        self._sampled_peak = peak

    def __enter__(self):
        gc.collect()
        self._base = rss_kib()
        if self._base is None:
            return self
        self._hwm = _reset_hwm()
        self._stop = threading.Event()
        self._sampled_peak = self._base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._base is None:
            return False
        hwm = _status_kib("VmHWM")["VmHWM"] if self._hwm else None
        self._stop.set()
        self._thread.join()
        peak = self._sampled_peak
        last = rss_kib()
        if last is not None:
            peak = max(peak, last)
        if hwm is not None:
            peak = max(peak, hwm)
            self.method = "VmHWM reset + 1 ms VmRSS sampling"
        else:
            self.method = "1 ms VmRSS sampling"
        self.extra_mb = max(0, peak - self._base) / KIB_PER_MB
        return False


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------

def timed(fn):
    """(seconds, result) of one call of fn()."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def measure(fn, repeat, keep_result=False):
    """Time fn() after one warm-up call.

    The warm-up runs inside :class:`PeakRSS` (so the timed runs are not
    disturbed by the sampling thread). Returns a dict with warmup_s, times_s,
    median_s, peak_extra_mb and, if keep_result, the last result.
    """
    gc.collect()
    with PeakRSS() as mem:
        warmup, result = timed(fn)
    del result
    times = []
    result = None
    for _ in range(repeat):
        result = None
        gc.collect()
        elapsed, result = timed(fn)
        times.append(elapsed)
    out = {
        "warmup_s": warmup,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_extra_mb": mem.extra_mb,
        "memory_method": mem.method,
    }
    if keep_result:
        out["result"] = result
    return out


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

def standard_normal(rng, shape, dtype):
    """Standard normal array drawn in the requested dtype (no float64 copy
    for float32: numpy's generator draws float32 directly)."""
    return rng.standard_normal(shape, dtype=np.dtype(dtype).type)


# ----------------------------------------------------------------------------
# Machine and BLAS
# ----------------------------------------------------------------------------

ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def cpu_model():
    """The 'model name' of /proc/cpuinfo (first CPU), else platform.processor()."""
    with contextlib.suppress(OSError):  # no /proc/cpuinfo: fall back to platform
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def blas_info():
    """The BLAS libraries loaded now, from threadpoolctl.

    Returns a list of dicts (user_api 'blas' only), or None if threadpoolctl
    is not installed. Call it after the code under test has loaded its BLAS
    (Numba's np.dot goes through SciPy's BLAS, which may be a second library).
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keep = ("internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")
    return [{k: info.get(k) for k in keep} for info in threadpool_info() if info.get("user_api") == "blas"]


def blas_threads(info):
    """Thread count(s) in effect as a short string ('unknown' without threadpoolctl)."""
    if not info:
        return "unknown"
    counts = sorted({str(lib["num_threads"]) for lib in info})
    return "/".join(counts)


def blas_summary(info):
    """One line per BLAS library: api version, threads, file name."""
    if info is None:
        return ["unknown (threadpoolctl not installed)"]
    if not info:
        return ["none loaded"]
    return [
        f"{lib['internal_api']} {lib['version']} ({lib.get('architecture')}), "
        f"{lib['num_threads']} threads, {os.path.basename(str(lib['filepath']))}"
        for lib in info
    ]


def machine_info():
    """A JSON-ready description of the machine and of the software."""
    import numba

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def cpu_steal_s():
    """CPU time stolen by the hypervisor so far (all CPUs), in seconds, from
    /proc/stat; None if unavailable. A large increase during a run means the
    timings were disturbed by other guests on the host."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

def markdown_table(headers, rows, align=None):
    """A Markdown table; align is a string of 'l'/'r' per column."""
    align = align or "l" * len(headers)
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values):
        padded = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_jsonl(path, records):
    """Write records (dicts), one JSON object per line, replacing the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as fh:
        for record in records:
            fh.write(json.dumps(record, default=_json_default, ensure_ascii=True, sort_keys=True))
            fh.write("\n")
    return path


def fmt(value, spec):
    """format(value, spec), or '-' for None."""
    return "-" if value is None else format(value, spec)
