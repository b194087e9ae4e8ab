"""Tokenizer runs side by side: what the written identifiers look like and what the run cost, one row per run.

Each run is an ``--out-dir`` of ``letter-fast tokenize ... --curve-every N``. A row takes from that folder:

* ``tokenizer_report.json`` (the written identifiers, i.e. ``best.pt``'s, the checkpoint selected by collision
  rate): codes used per level, the first-level Gini, collisions before re-assignment (share of items on a shared
  identifier), the code similarity of CF-nearest pairs, the selected epoch;
* ``training.json``: the training-mean reconstruction loss of the selected epoch;
* ``curve.csv``: the k-means start (epoch 0): first-level codes used and Gini; and the last row (the final
  epoch's nearest-code identifiers, which the selected checkpoint may precede): first-level codes used;
* ``timing.json``: training seconds per epoch (wall clock, this machine, whatever else ran on it).

  python benchmarks/tokenizer_settings_table.py default=runs/default both=runs/both \\
      --name tokenizer_reference_init_scientific

writes ``benchmarks/results/<name>.csv`` (a row per run) and prints the markdown table (for the results page).
Several folders for one label (``letter=runs/letter-seed0,runs/letter-seed1,runs/letter-seed2``: the same
command with other ``--seed``) make one markdown row of mean +- sample standard deviation over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, labelled_runs, write_csv  # noqa: E402
from letter_fast.tokenizer.curve import read_curve  # noqa: E402

COLUMNS = (
    ("setting", "setting"),
    ("first_level_codes_start", "first-level codes used, start"),
    ("first_level_gini_start", "first-level Gini, start"),
    ("first_level_codes", "first-level codes used"),
    ("first_level_gini", "first-level Gini"),
    ("first_level_codes_end", "first-level codes used, last epoch"),
    ("codes_used_per_level", "codes used per level"),
    ("collisions_before", "collisions before re-assignment"),
    ("cf_pair_similarity", "CF-pair code similarity"),
    ("recon", "recon loss"),
    ("best_epoch", "selected epoch"),
    ("seconds_per_epoch", "s/epoch"),
)


def run_row(label: str, folder: Path) -> dict:
    """One run's row (see the module docstring)."""
    report = json.loads((folder / "tokenizer_report.json").read_text())
    training = json.loads((folder / "training.json").read_text())
    timing = json.loads((folder / "timing.json").read_text())
    curve = read_curve(folder / "curve.csv")
    start = next(row for row in curve if int(row["epoch"]) == 0)
    best = report["best_epoch"]
    recon = next(r["recon"] for r in training["history"] if r["epoch"] == best)
    used = [level["codes_used"] for level in report["levels_usage"]]
    return {
        "setting": label,
        "run": str(folder),
        "first_level_codes_start": int(start["codes_used_1"]),
        "first_level_gini_start": round(float(start["first_level_gini"]), 3),
        "first_level_codes": used[0],
        "first_level_gini": round(report["first_level_gini"], 3),
        "first_level_codes_end": int(curve[-1]["codes_used_1"]),
        "codes_used_per_level": "/".join(map(str, used)),
        "collisions_before": round(report["collision_rate_before_reassignment"], 5),
        "cf_pair_similarity": round(report["cf_neighbour_code_similarity"], 4),
        "recon": round(recon, 5),
        "best_epoch": best,
        "seconds_per_epoch": round(timing["train_seconds"] / timing["epochs_timed"], 3),
    }


def _cell(key: str, values: list) -> str:
    """One markdown cell over a label's runs: the value of one run, mean +- sample std of several."""
    if key == "setting":
        return values[0] + (f" ({len(values)} seeds)" if len(values) > 1 else "")
    if key == "codes_used_per_level":   # the mean per level
        levels = list(zip(*[[int(c) for c in v.split("/")] for v in values]))
        return "/".join(f"{statistics.fmean(level):.0f}" for level in levels)
    percent = key == "collisions_before"
    scale = 100 if percent else 1
    unit = "%" if percent else ""
    if len(values) == 1:
        return f"{values[0] * scale:.2f}{unit}" if percent else str(values[0])
    mean, std = statistics.fmean(values) * scale, statistics.stdev(values) * scale
    digits = 2 if percent else (0 if key.startswith(("first_level_codes", "best_epoch")) else 4)
    return f"{mean:.{digits}f} +- {std:.{digits}f}{unit}"


def markdown(rows: list[dict]) -> str:
    """A markdown row per label (mean +- std over its runs when it has several)."""
    labels = list(dict.fromkeys(row["setting"] for row in rows))
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for label in labels:
        runs = [row for row in rows if row["setting"] == label]
        lines.append("| " + " | ".join(_cell(key, [row[key] for row in runs]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=OUT_DIR[,OUT_DIR...] of letter-fast tokenize runs")
    parser.add_argument("--name", required=True, help="write benchmarks/results/<name>.csv")
    args = parser.parse_args(argv)
    rows = [run_row(label, folder) for label, folder in labelled_runs(args.runs)]
    write_csv(RESULTS / f"{args.name}.csv", rows, ["setting", "run"] + [key for key, _ in COLUMNS[1:]])
    print(markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
