"""TIGER on Scientific, end to end: plain RQ-VAE identifiers vs LETTER vs LETTER + ranking loss.

The paper's claim under test (LETTER, CIKM 2024, Table 2): identifiers from the LETTER tokenizer
make TIGER recommend better than plain RQ-VAE identifiers, and the ranking-guided loss
(cross-entropy over ``logits / tau``, tau < 1) adds to it. Three settings, same budget each:

* ``rqvae``      TIGER on RQ-VAE identifiers (alpha = beta = 0), tau = 1
* ``letter``     TIGER on LETTER identifiers, tau = 1
* ``letter+rank`` TIGER on LETTER identifiers, tau = ``--rank-tau`` (paper's best ~0.7)

Both tokenizers are trained once (seed 0, same epochs) with ``letter-fast tokenize``; TIGER is
trained per seed with ``letter-fast train-tiger`` for the same number of optimizer steps (a step
budget, not a wall-clock one: on a shared machine a time budget gives busy and idle runs different
amounts of training) and evaluated on all test users (full ranking, 20-beam trie-constrained search).
The SASRec row comes from the ``train-cf`` run's own test metrics on the same leave-one-out split.
Finished runs are reused (each run folder holds its ``metrics.json``), so the script can be stopped and started again.

Writes ``benchmarks/results/scientific_tiger.{csv,md,png}``: per run and mean +- std per setting.

  python benchmarks/scientific_tiger.py --data scientific \\
      --embeddings runs/scientific/Scientific.emb-all-MiniLM-L6-v2.npy \\
      --cf runs/scientific/sasrec/Scientific.sasrec-emb32.pt --steps 2000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import save_figure, write_csv  # noqa: E402
from letter_fast.cli import main as cli_main  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402

NAME = "scientific_tiger"
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
# TIGER sized for a CPU budget of minutes (the `letter-fast run --tiger-size small` model)
SMALL = ["--num-layers", "2", "--num-decoder-layers", "2", "--d-model", "64", "--d-ff", "256",
         "--num-heads", "4", "--d-kv", "16", "--batch-size", "128"]


def run_cli(argv: list[str]) -> None:
    print("$ letter-fast " + shlex.join(argv), flush=True)
    if cli_main(argv) != 0:
        raise SystemExit(f"failed: letter-fast {shlex.join(argv)}")


def tiger_argv(data, index, out, *, tau: float, seed: int, steps: int, valid_users: int, size: str) -> list[str]:
    """The ``train-tiger`` command of one run: a step budget (patience past it), ``size`` small or paper."""
    argv = ["train-tiger", str(data), "--out-dir", str(out), "--tau", str(tau), "--seed", str(seed),
            "--max-steps", str(steps), "--valid-users", str(valid_users), "--patience", "1000", "--no-progress",
            *(SMALL if size == "small" else [])]
    if index is not None:
        argv[2:2] = ["--index", str(index)]
    return argv


def tokenize(args, variant: str) -> tuple[Path, list[str]]:
    """Train (or reuse) one tokenizer; returns its index.json and the command."""
    out = Path(args.runs) / f"tokenizer-{variant}"
    argv = ["tokenize", args.data, "--embeddings", args.embeddings, "--cf", args.cf, "--variant", variant,
            "--epochs", str(args.tokenizer_epochs), "--out-dir", str(out), "--no-progress"]
    index = next(out.glob("*.index.json"), None) if out.exists() else None
    if index is None or not (out / "tokenizer_report.json").exists():
        run_cli(argv)
        index = next(out.glob("*.index.json"))
    return index, argv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the Scientific data folder")
    parser.add_argument("--embeddings", required=True, help="semantic embeddings (.npy from letter-fast embed)")
    parser.add_argument("--cf", required=True, help="CF embeddings (.pt from letter-fast train-cf)")
    parser.add_argument("--sasrec-metrics", help="train-cf metrics.json for the SASRec row "
                                                  "(default: metrics.json beside --cf)")
    parser.add_argument("--runs", default="runs/scientific", help="folder for the tokenizer and TIGER runs")
    parser.add_argument("--tokenizer-epochs", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="TIGER optimizer steps per run (batch 128 for the "
                                                                 "small model: ~7.6 epochs of Scientific)")
    parser.add_argument("--rank-tau", type=float, default=0.7)
    parser.add_argument("--size", choices=["small", "paper"], default="small")
    parser.add_argument("--valid-users", type=int, default=1000, help="users per validation (0 = all)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    indexes = {v: tokenize(args, v) for v in ("rqvae", "letter")}
    settings = {"rqvae": ("rqvae", 1.0), "letter": ("letter", 1.0), "letter+rank": ("letter", args.rank_tau)}
    rows = []
    for setting, (variant, tau) in settings.items():
        for seed in args.seeds:
            out = Path(args.runs) / f"tiger-{setting.replace('+', '-')}-steps{args.steps}-seed{seed}"
            argv_t = tiger_argv(args.data, indexes[variant][0], out, tau=tau, seed=seed, steps=args.steps,
                                valid_users=args.valid_users, size=args.size)
            if not (out / "metrics.json").exists():
                t0 = time.perf_counter()
                run_cli(argv_t)
                print(f"{setting} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            result = json.loads((out / "metrics.json").read_text())
            rows.append({"setting": setting, "seed": seed, "tau": tau,
                         **{m: result["metrics"][m] for m in METRICS},
                         "train_samples_per_s": result["details"].get("train_samples_per_s") or json.loads(
                             (out / "timing.json").read_text())["train_samples_per_s"],
                         "best_valid_ndcg@10": result["details"]["best_valid_ndcg@10"],
                         "stopped": result["details"]["stopped"], "command": "letter-fast " + shlex.join(argv_t)})
    write_results(args, rows, indexes)
    return 0


def write_results(args, rows: list[dict], indexes: dict) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    write_csv(args.results / f"{NAME}.csv", rows)

    summary = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        runs = [r for r in rows if r["setting"] == setting]
        summary[setting] = {m: (statistics.mean(r[m] for r in runs),
                                statistics.stdev(r[m] for r in runs) if len(runs) > 1 else 0.0) for m in METRICS}
    sasrec_path = Path(args.sasrec_metrics) if args.sasrec_metrics else Path(args.cf).parent / "metrics.json"
    sasrec = None
    if sasrec_path.exists():
        data = json.loads(sasrec_path.read_text())
        test = data.get("test", data.get("metrics", data))
        sasrec = {m: test.get(m) for m in METRICS}

    lines = ["# TIGER on Scientific: RQ-VAE vs LETTER identifiers vs LETTER + ranking loss", "",
             f"Same budget per run: {args.steps} optimizer steps of TIGER training ({args.size} model, batch 128) on "
             f"this 2-core CPU, then all test users ranked with 20-beam trie-constrained search (the best "
             f"validation checkpoint, validation on {args.valid_users or 'all'} users after each epoch). "
             f"Seeds {args.seeds} "
             f"(TIGER init, batch order, dropout); tokenizers trained once, {args.tokenizer_epochs} epochs, seed 0. "
             "Mean +- sample std over seeds.", "",
             "| setting | tau | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    taus = {r["setting"]: r["tau"] for r in rows}
    for setting, stats in summary.items():
        lines.append(f"| {setting} | {taus[setting]:g} | " +
                     " | ".join(f"{mean:.4f} +- {std:.4f}" for mean, std in stats.values()) + " |")
    if sasrec and all(v is not None for v in sasrec.values()):
        lines.append("| SASRec (train-cf, same split) | - | " + " | ".join(f"{sasrec[m]:.4f}" for m in METRICS) + " |")
    lines += ["", "Per run:", "", "| setting | seed | recall@10 | ndcg@10 | train samples/s | stopped |",
              "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r['setting']} | {r['seed']} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
              f"{r['train_samples_per_s']:.0f} | {r['stopped']} |" for r in rows]
    lines += ["", "Commands:", ""]
    lines += [f"    letter-fast {shlex.join(argv)}" for _, argv in indexes.values()]
    lines += [f"    {r['command']}" for r in rows]
    atomic_write(args.results / f"{NAME}.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    plot(args.results / f"{NAME}.png", summary, sasrec)


def plot(path: Path, summary: dict, sasrec) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric in zip(axes, ("recall@10", "ndcg@10")):
        names = list(summary)
        means = [summary[n][metric][0] for n in names]
        stds = [summary[n][metric][1] for n in names]
        ax.bar(names, means, yerr=stds, capsize=4, color=["#999999", "#4c72b0", "#dd8452"][: len(names)])
        if sasrec and sasrec.get(metric) is not None:
            ax.axhline(sasrec[metric], color="k", linestyle="--", linewidth=1, label="SASRec")
            ax.legend(loc="lower right")
        ax.set_title(f"TIGER on Scientific: {metric}")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
