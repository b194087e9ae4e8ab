"""One benchmark harness for every op: warm-up, median and spread, peak memory, ratios.

Each benchmark script builds a list of :class:`Case` objects (one implementation at one size,
the reference among them) and hands them to :func:`run_cases`, which

* times each case: ``warmup`` untimed calls, then ``repeat`` timed calls (at least
  ``min_seconds`` in total); reports the median and the 20th/80th percentiles;
* measures the extra peak memory of one call: on CUDA from the caching allocator's peak, on CPU
  from the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``,
  after returning free heap pages with ``malloc_trim``);
* divides the reference's median by each case's median (``speedup``: > 1 means faster than the
  reference measured in the same run, at the same sizes);
* appends rows to ``benchmarks/results/<name>.csv`` and rewrites ``<name>.md`` (a table of this
  run) and ``<name>.png`` (time against size per implementation).

A case that fails (out of memory, missing peer library) is recorded with its error, not dropped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import gc
import io
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = [
    "timestamp", "op", "impl", "params", "device", "device_name", "threads", "torch", "letter_fast",
    "median_ms", "p20_ms", "p80_ms", "repeats", "peak_extra_mb", "speedup_vs_reference", "note",
]


@dataclasses.dataclass
class Case:
    """One implementation of an op at one size.

    ``make`` builds the inputs (not timed) and returns a zero-argument callable that does the
    work once; ``reference`` marks the baseline the others are divided by (same ``group``).
    """

    op: str
    impl: str
    params: dict
    make: Callable[[], Callable[[], object]]
    device: str = "cpu"
    reference: bool = False
    note: str = ""
    repeat: Optional[int] = None  # overrides run_cases' repeat/warmup (e.g. one call at huge sizes)
    warmup: Optional[int] = None

    @property
    def group(self) -> tuple:
        return tuple(sorted(self.params.items()))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _release_free_heap() -> None:
    """Hand glibc's free-but-resident heap pages back to the OS (``malloc_trim(0)``).

    Without it, a measured call that reuses blocks freed earlier shows no RSS growth at all.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_extra_memory(fn: Callable[[], object], device: str) -> Optional[float]:
    """Extra peak memory (bytes) of one call of ``fn`` beyond what was held before it."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return float(peak)
    _release_free_heap()
    base = _rss_bytes("VmRSS")
    if base is None or not _reset_peak_rss():
        return None
    out = fn()
    peak = _rss_bytes("VmHWM")
    del out
    return float(max(0, peak - base))


def time_call(fn: Callable[[], object], device: str, warmup: int = 2, repeat: int = 7,
              min_seconds: float = 0.2, max_repeat: int = 200) -> list[float]:
    """Wall-clock seconds of each timed call (device-synchronized)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_seconds and len(times) < max_repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def run_case(case: Case, warmup: int, repeat: int, min_seconds: float) -> dict:
    row = {
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "op": case.op, "impl": case.impl,
        "params": " ".join(f"{k}={v}" for k, v in case.params.items()),
        "device": case.device,
        "device_name": (torch.cuda.get_device_name(0) if case.device.startswith("cuda")
                        else (platform.processor() or platform.machine())),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "letter_fast": _version(), "note": case.note,
    }
    try:
        fn = case.make()
        mem = peak_extra_memory(fn, case.device)
        times = time_call(fn, case.device, warmup=warmup, repeat=repeat, min_seconds=min_seconds)
        row.update(median_ms=1e3 * statistics.median(times), p20_ms=1e3 * _quantile(times, 0.2),
                   p80_ms=1e3 * _quantile(times, 0.8), repeats=len(times),
                   peak_extra_mb=None if mem is None else mem / 2**20)
    except Exception as exc:  # recorded, not hidden: an OOM of the reference is a result
        row.update(median_ms=None, p20_ms=None, p80_ms=None, repeats=0, peak_extra_mb=None,
                   note=(case.note + "; " if case.note else "") + f"failed: {type(exc).__name__}: {str(exc)[:160]}")
    finally:
        gc.collect()
        if case.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return row


def _version() -> str:
    try:
        import letter_fast

        return letter_fast.__version__
    except Exception:
        return "?"


def run_cases(name: str, cases: list[Case], warmup: int = 2, repeat: int = 7, min_seconds: float = 0.2,
              plot_x: Optional[str] = None, out_dir: Path = RESULTS, verbose: bool = True) -> list[dict]:
    """Run every case, fill in ratios to the reference, write csv/md/png under ``out_dir``."""
    rows = []
    for case in cases:
        row = run_case(case, warmup if case.warmup is None else case.warmup,
                       repeat if case.repeat is None else case.repeat, min_seconds)
        row["_group"], row["_reference"] = case.group, case.reference
        rows.append(row)
        if verbose:
            t = "failed" if row["median_ms"] is None else f"{row['median_ms']:10.3f} ms"
            m = "" if row["peak_extra_mb"] is None else f"  +{row['peak_extra_mb']:.1f} MB"
            print(f"{case.op:<22} {case.impl:<24} {row['params']:<36} {t}{m} {row['note']}", flush=True)
    for row in rows:
        ref = next((r for r in rows if r["_reference"] and r["_group"] == row["_group"] and r["median_ms"]), None)
        row["speedup_vs_reference"] = (ref["median_ms"] / row["median_ms"]) if ref and row["median_ms"] else None
    write_results(name, rows, out_dir, plot_x)
    return rows


def labelled_runs(specs: list[str]) -> list[tuple[str, Path]]:
    """``LABEL=DIR[,DIR...]`` specs (a bare ``DIR`` is labelled by its name) as ``(label, folder)`` pairs, in order:
    the run folders of the side-by-side tables (several folders for one label: the same command, other seeds)."""
    pairs = []
    for spec in specs:
        label, sep, paths = spec.rpartition("=")
        if not sep:
            label, paths = Path(spec).name, spec
        pairs += [(label, Path(folder)) for folder in paths.split(",")]
    return pairs


def write_csv(path: Path, rows: list[dict], fieldnames: Optional[list] = None) -> None:
    """Rows as a csv file (header from ``fieldnames`` or the first row), written atomically. Keys starting with
    ``_`` are a script's own (plot data, grouping) and never written; any other key outside the header is an
    error, as in :class:`csv.DictWriter`."""
    from letter_fast.io import atomic_write

    rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: tmp.write_text(buf.getvalue()))


def write_results(name: str, rows: list[dict], out_dir: Path, plot_x: Optional[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{name}.csv"
    new_file = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
    _atomic_write(out_dir / f"{name}.md", markdown_table(name, rows))
    if plot_x:
        plot(name, rows, plot_x, out_dir / f"{name}.png")


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def markdown_table(name: str, rows: list[dict]) -> str:
    dev = sorted({r["device_name"] for r in rows})
    lines = [f"# {name}", "",
             f"Latest run: {rows[0]['timestamp'] if rows else '-'}; device: {', '.join(dev)}; "
             f"threads: {rows[0]['threads'] if rows else '-'}; torch {rows[0]['torch'] if rows else '-'}. "
             "Median of repeated calls (p20-p80 in brackets); speedup = reference median / this median, "
             "same run, same sizes; memory = extra peak over what was held before the call.", "",
             "| params | impl | median ms | p20-p80 ms | peak extra MB | speedup vs reference | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['params']} | {r['impl']} | {_fmt(r['median_ms'], '.3f')} | "
            f"{_fmt(r['p20_ms'], '.3f')}-{_fmt(r['p80_ms'], '.3f')} | {_fmt(r['peak_extra_mb'], '.1f')} | "
            f"{_fmt(r['speedup_vs_reference'], '.2f')} | {r['note']} |")
    return "\n".join(lines) + "\n"


def plot(name: str, rows: list[dict], x_param: str, path: Path) -> None:
    """Median time against ``x_param`` (log-log), one line per implementation and other params."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["median_ms"] is None:
            continue
        params = dict(kv.split("=", 1) for kv in r["params"].split())
        if x_param not in params:
            continue
        rest = " ".join(f"{k}={v}" for k, v in params.items() if k != x_param)
        series.setdefault(f"{r['impl']} {rest}", []).append((float(params[x_param]), r["median_ms"]))
    if not series:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_param)
    ax.set_ylabel("median time (ms)")
    ax.set_title(name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _atomic_write(path: Path, text: str) -> None:
    from letter_fast.io import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(text))


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """A matplotlib figure as a png at ``path``, written atomically (no reader sees half a plot), then closed."""
    import matplotlib.pyplot as plt

    from letter_fast.io import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def append_markdown(name: str, text: str, out_dir: Path = RESULTS) -> None:
    """Add a section (e.g. a target check) to the markdown table of the latest run."""
    path = out_dir / f"{name}.md"
    _atomic_write(path, (path.read_text() if path.exists() else "") + "\n" + text.rstrip() + "\n")


def quick_args(description: str, argv=None) -> argparse.Namespace:
    """Parse the options of a benchmark that has no others: ``--quick`` (smoke sizes) and ``--out`` (results folder)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return parser.parse_args(argv)


def shared_machine_note(script: str, quick: bool, sizes: str) -> str:
    """The closing note of a two-backend CPU benchmark's table: the command that made it, and why its sizes are modest
    and single timings noisy (the load average at the end of the run says how busy the shared machine was)."""
    command = f"python {script}" + (" --quick" if quick else "")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"Command: `{command}`. Sizes are modest ({sizes}) because the machine is shared with other jobs "
            f"(load average {load} over 1 / 5 / 15 min at the end of this run, on {os.cpu_count()} cores): "
            "single timings are noisy, compare the two backends within a row.")


def fastest(rows: list[dict], group: tuple, impls: set[str]) -> Optional[dict]:
    """The quickest successful row of ``group`` among ``impls``."""
    timed = [r for r in rows if r["_group"] == group and r["impl"] in impls and r["median_ms"]]
    return min(timed, key=lambda r: r["median_ms"]) if timed else None
