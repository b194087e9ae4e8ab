"""TIGER runs side by side, finished or still training: the downstream table of a tokenizer comparison.

Each run is an ``--out-dir`` of ``letter-fast train-tiger``. A finished run (``metrics.json``) gives its test
Recall/NDCG@5/10; a run still training (only ``history.json``) gives how far it got and its best validation
NDCG@10 so far, so a partial table says plainly which numbers are final. Several folders for one label
(``letter=runs/downstream/letter-seed0,runs/downstream/letter-seed1``: the same command with other seeds) make
one row of mean +- sample standard deviation over its finished runs. ``--sasrec`` adds the SASRec baseline of the
same split (a ``letter-fast train-cf`` ``metrics.json``).

  python benchmarks/downstream_table.py letter=runs/downstream/letter-seed0,runs/downstream/letter-seed1 \\
      rqvae=runs/downstream/rqvae-seed0 --sasrec runs/scientific/sasrec/metrics.json --name downstream_scientific

writes ``benchmarks/results/<name>.csv`` (a row per run) and ``<name>.png`` (left: every finished run's test
Recall@10 and NDCG@10 by setting, with the mean; right: every run's validation NDCG@10 against the step), and
prints the markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, labelled_runs, save_figure, write_csv  # noqa: E402

METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def run_row(label: str, folder: Path) -> dict:
    """One run: its test metrics when finished, else its progress (steps, best validation NDCG@10)."""
    history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").exists() else []
    evals = [h for h in history if "valid_ndcg@10" in h]
    best = max(evals, key=lambda h: h["valid_ndcg@10"], default=None)
    row = {"setting": label, "run": str(folder), "steps": history[-1]["step"] if history else 0,
           "_curve": [(h["step"], h["valid_ndcg@10"]) for h in evals],
           "best_valid_ndcg@10": round(best["valid_ndcg@10"], 4) if best else None,
           "best_step": best["step"] if best else None, "finished": (folder / "metrics.json").exists()}
    if row["finished"]:
        metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
        row.update({k: round(metrics[k], 4) for k in METRICS})
    return row


def markdown(rows: list[dict], sasrec: dict | None) -> str:
    """The mean +- std table over finished runs, then a line per run."""
    lines = ["| setting | finished runs | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for label in dict.fromkeys(r["setting"] for r in rows):
        done = [r for r in rows if r["setting"] == label and r["finished"]]
        total = sum(r["setting"] == label for r in rows)
        cells = []
        for key in METRICS:
            values = [r[key] for r in done]
            cells.append("-" if not values else f"{values[0]:.4f}" if len(values) == 1 else
                         f"{statistics.fmean(values):.4f} +- {statistics.stdev(values):.4f}")
        lines.append(f"| {label} | {len(done)} of {total} | " + " | ".join(cells) + " |")
    if sasrec:
        lines.append("| SASRec (train-cf, same split) | - | " + " | ".join(f"{sasrec[k]:.4f}" for k in METRICS) + " |")
    lines += ["", "| setting | run | state | steps | best valid NDCG@10 (step) | test NDCG@10 |",
              "|---|---|---|---:|---:|---:|"]
    for r in rows:
        state = "finished" if r["finished"] else "training" if r["steps"] else "not started"
        best = f"{r['best_valid_ndcg@10']} ({r['best_step']})" if r["best_step"] else "-"
        lines.append(f"| {r['setting']} | {Path(r['run']).name} | {state} | {r['steps']} | {best} | "
                     f"{r.get('ndcg@10', '-')} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], sasrec: dict | None, path: Path) -> None:
    """Test metrics by setting (a dot per finished run, a bar at their mean) beside the validation curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["setting"] for r in rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for j, (key, colour) in enumerate((("recall@10", "tab:blue"), ("ndcg@10", "tab:orange"))):
        for i, label in enumerate(labels):
            values = [r[key] for r in rows if r["setting"] == label and r["finished"]]
            x = i + (j - 0.5) * 0.35
            if values:
                left.bar(x, statistics.fmean(values), width=0.33, color=colour, alpha=0.35,
                         label=key if i == 0 else None)
                left.scatter([x] * len(values), values, color=colour, s=14, zorder=3)
        if sasrec:
            left.axhline(sasrec[key], color=colour, linestyle="--", linewidth=1, label=f"SASRec {key}")
    left.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    left.set_ylabel("test metric (dots: runs, bars: mean)")
    left.legend(fontsize=7)
    for r in rows:
        if r["_curve"]:
            right.plot(*zip(*r["_curve"]), linewidth=1, label=f"{r['setting']}: {Path(r['run']).name}")
    right.set_xlabel("optimizer step")
    right.set_ylabel("validation NDCG@10")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=OUT_DIR[,OUT_DIR...] of letter-fast train-tiger runs")
    parser.add_argument("--sasrec", type=Path, help="a letter-fast train-cf metrics.json (its test metrics)")
    parser.add_argument("--name", required=True, help="write benchmarks/results/<name>.csv")
    args = parser.parse_args(argv)
    rows = [run_row(label, folder) for label, folder in labelled_runs(args.runs)]
    sasrec = json.loads(args.sasrec.read_text())["test"] if args.sasrec else None
    write_csv(RESULTS / f"{args.name}.csv", rows, ["setting", "run", "finished", "steps", "best_valid_ndcg@10",
                                                   "best_step", *METRICS])
    plot(rows, sasrec, RESULTS / f"{args.name}.png")
    print(markdown(rows, sasrec), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
