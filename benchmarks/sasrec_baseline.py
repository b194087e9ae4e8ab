"""SASRec baseline on the reference data sets: Recall/NDCG@5/10 on the leave-one-out test split.

Trains through the same command users run (``letter-fast train-cf``), one data set after the other,
each within a wall-clock budget, and writes ``benchmarks/results/sasrec_baseline.{csv,md}`` with the
exact command of every row. The papers' SASRec on Instruments (LETTER, CIKM 2024, Table 2):
Recall@10 0.0947, NDCG@10 0.0690.

    flock /tmp/letter_fast_bench.lock python benchmarks/sasrec_baseline.py --datasets scientific instruments \\
        --time-budget-min 10 -- --lr 0.002
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import write_csv  # noqa: E402
from letter_fast.cli import main as cli_main  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAPER = {"Instruments": {"recall@10": 0.0947, "ndcg@10": 0.0690}}
COLUMNS = ["data_set", "run", "loss", "users", "items", "recall@5", "ndcg@5", "recall@10", "ndcg@10", "valid_ndcg@10",
           "best_epoch", "epochs_run", "train_s", "time_budget_min", "dim", "lr", "batch_size", "dropout",
           "attn_dropout", "device", "threads", "load_avg_1m", "command"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["scientific", "instruments"])
    p.add_argument("--time-budget-min", type=float, default=10.0)
    p.add_argument("--out-root", default="runs", help="where the runs' outputs go (relative to the repository root)")
    p.add_argument("--table-only", action="store_true", help="no training: rebuild the table from the runs' "
                                                              "metrics.json files")
    p.add_argument("--tag", default="baseline", help="runs go to <out-root>/<name>/sasrec-<tag>; the table lists "
                                                     "every sasrec-* run found there")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more train-cf flags (e.g. -- --lr 0.002)")
    args = p.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    os.chdir(ROOT)
    rows = []
    for name in args.datasets:
        out_dir = Path(args.out_root) / name / f"sasrec-{args.tag}"
        cmd = ["train-cf", name, "--out-dir", str(out_dir), "--no-resume", "--time-budget-min",
               f"{args.time_budget_min:g}", "--no-progress", *extra]
        load = os.getloadavg()[0]
        if not args.table_only:
            print("$ letter-fast " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            t0 = time.perf_counter()
            if cli_main(cmd) != 0:
                return 1
            print(f"{name}: {time.perf_counter() - t0:.0f} s wall", flush=True)
            (out_dir / "load_avg.txt").write_text(f"{load:.1f}\n")
        for run_dir in sorted((Path(args.out_root) / name).glob("sasrec-*")):
            if (run_dir / "metrics.json").exists():
                rows.append(row_from_run(name, run_dir))
        rows.append(transition_baseline(name))
    write(rows, Path(args.results))
    return 0


def transition_baseline(name: str) -> dict:
    """A training-free reference: score item j after history h by how often the training windows go from
    h's last item to j (ties broken by popularity). Shows what first-order item-to-item patterns alone give,
    and that the validation/test gap is in the data, not in a model."""
    from letter_fast.data import PAD, load_dataset, split_dataset, training_windows
    from letter_fast.metrics import ranks_from_scores, topk_metrics

    ds = load_dataset(name)
    split = split_dataset(ds)
    inputs, targets = training_windows(ds.histories, 20)
    real = targets != PAD
    V = ds.num_items
    counts = torch.zeros(V, V)
    counts.index_put_((inputs[real], targets[real]), torch.ones(int(real.sum())), accumulate=True)
    popularity = torch.bincount(targets[real], minlength=V).float()
    out = {}
    for part, samples in (("valid", split.valid), ("test", split.test)):
        ranks = torch.cat([ranks_from_scores(counts[b.history[:, -1]] + 1e-3 * popularity / popularity.max(), b.target)
                           for b in samples.batches(2048)])
        out[part] = topk_metrics(ranks)
    return {"data_set": ds.name, "run": "item-transition counts (no training)", "loss": "-", "users": ds.num_users,
            "items": V, **{k: round(v, 4) for k, v in out["test"].items()},
            "valid_ndcg@10": round(out["valid"]["ndcg@10"], 4), "best_epoch": "-", "epochs_run": "-", "train_s": "-",
            "time_budget_min": 0.0, "dim": "-", "lr": "-", "batch_size": "-", "dropout": "-", "attn_dropout": "-",
            "device": "cpu", "threads": "-", "load_avg_1m": "",
            "command": f"python benchmarks/sasrec_baseline.py --table-only --datasets {name.lower()}  "
                       "(computed with the table)"}


def command_of(name: str, out_dir: Path, cfg: dict) -> str:
    """The train-cf command that reproduces a run: the flags of every setting that differs from the defaults."""
    from letter_fast.cf import SASRecConfig

    defaults = dataclasses.asdict(SASRecConfig())
    flags = [f"--{k.replace('_', '-')} {cfg[k]:g}" if isinstance(cfg[k], float) else f"--{k.replace('_', '-')} {cfg[k]}"
             for k in defaults if k in cfg and cfg[k] != defaults[k]]
    return f"letter-fast train-cf {name} --out-dir {out_dir} --no-resume " + " ".join(flags)


def train_seconds(metrics: dict, out_dir: Path) -> float:
    """Training seconds: in timing.json since metrics.json repeats exactly (older runs kept them in metrics.json)."""
    if "train_seconds" in metrics:
        return metrics["train_seconds"]
    timing = out_dir / "timing.json"
    return json.loads(timing.read_text()).get("train_seconds", float("nan")) if timing.exists() else float("nan")


def row_from_run(name: str, out_dir: Path) -> dict:
    from letter_fast.data import load_dataset

    m = json.loads((out_dir / "metrics.json").read_text())
    cfg = m["config"]
    # runs made before these settings existed used what is now spelled like this
    cfg.setdefault("attn_dropout", cfg["dropout"])
    cfg.setdefault("loss", "bce")
    ds = load_dataset(name)
    load_file = out_dir / "load_avg.txt"
    return {"data_set": m["data_set"], "run": out_dir.name, "loss": cfg.get("loss", "bce"), "users": ds.num_users,
            "items": ds.num_items,
            **{k: round(v, 4) for k, v in m["test"].items()},
            "valid_ndcg@10": round(m["valid"]["ndcg@10"], 4), "best_epoch": m["best_epoch"],
            "epochs_run": m["epochs_run"], "train_s": round(train_seconds(m, out_dir)),
            "time_budget_min": cfg["time_budget_min"], "dim": cfg["dim"], "lr": cfg["lr"],
            "batch_size": cfg["batch_size"], "dropout": cfg["dropout"],
            "attn_dropout": cfg.get("attn_dropout", cfg["dropout"]), "device": cfg["device"],
            "threads": cfg["threads"], "load_avg_1m": load_file.read_text().strip() if load_file.exists() else "",
            "command": command_of(name, out_dir, cfg)}


def write(rows: list[dict], out: Path) -> None:
    write_csv(out / "sasrec_baseline.csv", rows, COLUMNS)
    lines = [
        "# SASRec baseline (leave-one-out, full ranking over all items, test split)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(1-minute load average at the start of each run in the table), torch {torch.__version__}. Each run is "
        "capped by a wall-clock budget (`--time-budget-min`); the weights of the best validation NDCG@10 are kept.",
        "",
        "| data set | run | loss | lr | dropout | R@5 | N@5 | R@10 | N@10 | valid N@10 | best / run epochs | train s "
        "| load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['data_set']} | {r['run']} | {r['loss']} | {r['lr']} | {r['dropout']}/{r['attn_dropout']} "
                     f"| {r['recall@5']:.4f} | {r['ndcg@5']:.4f} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} "
                     f"| {r['valid_ndcg@10']:.4f} | {r['best_epoch']} / {r['epochs_run']} | {r['train_s']} "
                     f"| {r['load_avg_1m']} |")
    for name, ref in PAPER.items():
        lines.append(f"| {name} | paper (LETTER, Table 2) | | | | | | {ref['recall@10']:.4f} | {ref['ndcg@10']:.4f} "
                     "| | | | |")
    trained = [r for r in rows if r["loss"] != "-"]
    lines += ["", "All SASRec runs: d = " + ", ".join(sorted({str(r["dim"]) for r in trained})) + ", batch "
              + ", ".join(sorted({str(r["batch_size"]) for r in trained})) + ", threads "
              + ", ".join(sorted({str(r["threads"]) for r in trained})) + ", max_len 20, 2 blocks, 1 head, Adam; "
              "dropout column = residual/FFN rate / attention rate; load = 1-minute load average when the run "
              "started (blank: not recorded); train s = wall-clock training time.", "",
              "Commands (from the repository root; data root from `LETTER_FAST_DATA` or a sibling `shared/data`):", ""]
    lines += [f"    {r['command']}" for r in trained]
    lines += ["", "Table rebuilt from the runs' metrics.json by `python benchmarks/sasrec_baseline.py --table-only`.",
              ""]
    md = out / "sasrec_baseline.md"
    old = md.read_text() if md.exists() else ""
    notes = old[old.index("## Notes"):] if "## Notes" in old else ""  # hand-written analysis is kept
    atomic_write(md, lambda tmp: tmp.write_text("\n".join(lines) + ("\n" + notes if notes else "")))


if __name__ == "__main__":
    sys.exit(main())
