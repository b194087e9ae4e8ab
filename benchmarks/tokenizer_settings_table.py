"""Tokenizer runs side by side: what the written identifiers look like and what the run cost, one row per run.

Each run is an ``--out-dir`` of ``letter-fast tokenize ... --curve-every N``. A row takes from that folder:

* ``tokenizer_report.json`` (the written identifiers, i.e. ``best.pt``'s, the checkpoint selected by collision
  rate): codes used per level, the first-level Gini, collisions before re-assignment (share of items on a shared
  identifier), the code similarity of CF-nearest pairs, the selected epoch;
* ``training.json``: the training-mean reconstruction loss of the selected epoch;
* ``curve.csv``: the k-means start (epoch 0): first-level codes used and Gini;
* ``timing.json``: training seconds per epoch (wall clock, this machine, whatever else ran on it).

  python benchmarks/tokenizer_settings_table.py default=runs/default both=runs/both \\
      --name tokenizer_reference_init_scientific

writes ``benchmarks/results/<name>.csv`` and prints the markdown table (for the results page).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, write_csv  # noqa: E402
from letter_fast.tokenizer.curve import read_curve  # noqa: E402

COLUMNS = (
    ("setting", "setting"),
    ("first_level_codes_start", "first-level codes used, start"),
    ("first_level_gini_start", "first-level Gini, start"),
    ("first_level_codes", "first-level codes used"),
    ("first_level_gini", "first-level Gini"),
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
    start = next(row for row in read_curve(folder / "curve.csv") if int(row["epoch"]) == 0)
    best = report["best_epoch"]
    recon = next(r["recon"] for r in training["history"] if r["epoch"] == best)
    used = [level["codes_used"] for level in report["levels_usage"]]
    return {
        "setting": label,
        "first_level_codes_start": int(start["codes_used_1"]),
        "first_level_gini_start": round(float(start["first_level_gini"]), 3),
        "first_level_codes": used[0],
        "first_level_gini": round(report["first_level_gini"], 3),
        "codes_used_per_level": "/".join(map(str, used)),
        "collisions_before": f"{report['collision_rate_before_reassignment']:.2%}",
        "cf_pair_similarity": round(report["cf_neighbour_code_similarity"], 4),
        "recon": round(recon, 5),
        "best_epoch": best,
        "seconds_per_epoch": round(timing["train_seconds"] / timing["epochs_timed"], 3),
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=OUT_DIR of a letter-fast tokenize run")
    parser.add_argument("--name", required=True, help="write benchmarks/results/<name>.csv")
    args = parser.parse_args(argv)
    rows = []
    for spec in args.runs:
        label, sep, path = spec.rpartition("=")
        if not sep:
            label, path = Path(spec).name, spec
        rows.append(run_row(label, Path(path)))
    write_csv(RESULTS / f"{args.name}.csv", rows, [key for key, _ in COLUMNS])
    print(markdown(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
