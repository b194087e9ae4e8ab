"""Reproduction: LETTER-TIGER on the paper's released Instruments identifiers, ranking-guided loss, test metrics.

Paper (LETTER, CIKM 2024, Table 1 / ablation): LETTER-TIGER on Instruments Recall@10 0.1122, NDCG@10 0.0831 (plain
TIGER identifiers: Recall@10 0.1058). Identifiers: ``instruments/Instruments.index.json`` (4 x 256, 9,897 identifiers
for 9,922 items). Protocol: leave-one-out, history <= 20, full ranking, 20 beams, trie-constrained.

Two profiles:

* ``gpu`` (default on CUDA): sized to finish in under 10 minutes on one H100: bf16 autocast, batch 1024, all samples
  on the GPU, up to 150 epochs (cosine schedule over them), validation (all users) every 5 epochs, early stopping
  after 6 validations without gain, a 480 s training-time cap; the full test set.
* ``cpu``: a shortened run for a machine without a GPU, with a stated wall-clock budget (``--budget-min``): the same
  model and loss; the schedule is sized to the budget from a short timing of real training steps; validation on a
  fixed random subset of users at regular steps (the learning curve); test on a fixed random subset of test users.
  It shows where the curve is heading, not the final number.

Writes ``<results>/`` : ``log.txt``, ``history.json`` (the learning curve), ``metrics.json``, ``curve.png`` and
``README.md`` (command, device, budget, results next to the paper's). The run folder (checkpoints, resumable) is
``runs/repro_instruments-<profile>``. Usage::

    python benchmarks/repro_instruments.py                       # gpu profile on CUDA, cpu profile otherwise
    flock /tmp/letter_fast_bench.lock python benchmarks/repro_instruments.py --profile cpu --budget-min 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, save_figure  # noqa: E402
from letter_fast.data import load_dataset, split_dataset  # noqa: E402
from letter_fast.genrec.evaluate import evaluate_tiger, metrics_table  # noqa: E402
from letter_fast.genrec.tiger import CodeVocabulary, build_tiger, sequences_from_samples, tiger_loss  # noqa: E402
from letter_fast.genrec.train import TigerTrainConfig, bucketed_batches, train_tiger  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402

PAPER = {"LETTER-TIGER (paper)": {"recall@10": 0.1122, "ndcg@10": 0.0831},
         "TIGER (paper)": {"recall@10": 0.1058, "ndcg@10": 0.0797}}


def profile_config(profile: str, tau: float) -> TigerTrainConfig:
    if profile == "gpu":
        return TigerTrainConfig(tau=tau, batch_size=1024, lr=5e-4, epochs=150, eval_every_epochs=5, patience=6,
                                eval_batch_size=1024, time_budget_s=480, device="cuda", bf16=True)
    # threads=0: the count --threads gave this script (the trainer's own default is 1)
    return TigerTrainConfig(tau=tau, batch_size=256, lr=1e-3, epochs=1, valid_users=1000, eval_batch_size=128,
                            device="cpu", patience=1000, threads=0)


def training_rate(codes, split, config: TigerTrainConfig, steps: int = 6) -> float:
    """Optimizer steps per second of the real model on real bucketed batches (a scratch copy; first step untimed).

    The batches are spread evenly over the epoch: bucketed batches come in runs of similar history length, so the
    first few alone are not typical (timed on the first four, a 28-minute budget trained for 12.4 minutes)."""
    vocab = CodeVocabulary.for_codes(codes)
    seq = sequences_from_samples(codes, split.train, vocab, config.max_history)
    model = build_tiger(vocab, config.model_config(), seed=123)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    batches = bucketed_batches(seq.lengths, config.batch_size, torch.Generator().manual_seed(7), config.bucket_window)
    t0 = None
    spread = [batches[i * len(batches) // (steps + 1)] for i in range(steps + 1)]
    for i, b in enumerate(spread):
        if i == 1:
            t0 = time.perf_counter()
        ids, mask, labels = seq.batch(b)
        loss = tiger_loss(model, ids, mask, labels, config.tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def plot_curve(history: list, path: Path, title: str, paper: Optional[dict] = None, x: str = "epoch") -> None:
    """Validation Recall/NDCG@10 and the training loss over ``x`` (a history key), with the paper's test numbers
    (``{name: {"recall@10": .., "ndcg@10": ..}}``) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper = PAPER if paper is None else paper
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    xs = [h[x] for h in history]
    ax[0].plot(xs, [h["valid_ndcg@10"] for h in history], marker="o", label="validation NDCG@10")
    ax[0].plot(xs, [h["valid_recall@10"] for h in history], marker="s", label="validation Recall@10")
    first = next(iter(paper.items()))
    for metric, color in (("ndcg@10", "C0"), ("recall@10", "C1")):
        ax[0].axhline(first[1][metric], color=color, ls="--", lw=0.8,
                      label=f"{first[0]} test {metric} {first[1][metric]}")
    ax[0].set_xlabel(x)
    ax[0].set_title(title, fontsize=9)
    ax[0].legend(fontsize=7)
    ax[0].grid(alpha=0.3)
    ax[1].plot(xs, [h["train_loss"] for h in history], marker="o", color="C3")
    ax[1].set_xlabel(x)
    ax[1].set_ylabel("training loss since the previous point")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="folder holding instruments/ (default: $LETTER_FAST_DATA or "
                                                     "a sibling shared/data)")
    p.add_argument("--profile", choices=["auto", "gpu", "cpu"], default="auto")
    p.add_argument("--budget-min", type=float, default=15.0, help="cpu profile: wall-clock minutes for training")
    p.add_argument("--tau", type=float, default=0.7, help="ranking-guided loss temperature (default 0.7)")
    p.add_argument("--test-users", type=int, default=0, help="test on this many random users (0 = all; the cpu "
                                                             "profile defaults to 3000)")
    p.add_argument("--results", type=Path, default=RESULTS / "repro_instruments")
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = args.profile if args.profile != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    run_dir = args.run_dir or ROOT / "runs" / f"repro_instruments-{profile}"
    args.results.mkdir(parents=True, exist_ok=True)
    log_path = args.results / f"log-{profile}.txt"
    log_file = open(log_path, "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])
    wall0 = time.perf_counter()
    try:
        dataset = load_dataset("instruments", args.data_root)
    except FileNotFoundError as exc:
        print(f"repro_instruments: {exc}; set --data-root or LETTER_FAST_DATA", file=sys.stderr)
        return 2
    codes = dataset.codes
    split = split_dataset(dataset)
    config = profile_config(profile, args.tau)
    device_name = torch.cuda.get_device_name(0) if profile == "gpu" else (platform.processor() or platform.machine())
    log(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}")
    log(f"profile {profile} on {device_name}, {torch.get_num_threads()} threads; {split.summary()}; "
        f"identifiers {tuple(codes.shape)}")
    test_users = args.test_users or (3000 if profile == "cpu" else 0)
    if profile == "cpu":
        rate = training_rate(codes, split, config)
        eval_share = 0.25          # of the budget, for validation passes
        steps = max(10, int(rate * args.budget_min * 60 * (1 - eval_share)))
        config = dataclasses.replace(config, max_steps=steps, eval_every_steps=max(1, steps // 8),
                                     time_budget_s=args.budget_min * 60 * (1 - eval_share))
        log(f"measured {rate:.3f} steps/s ({rate * config.batch_size:.0f} samples/s) at batch {config.batch_size}: "
            f"schedule sized to {steps} steps = {steps * config.batch_size} samples "
            f"({steps * config.batch_size / len(split.train):.2f} epochs) for a {args.budget_min:g}-minute budget")
    log("config " + json.dumps(dataclasses.asdict(config)))
    run = train_tiger(split, codes, config, out_dir=run_dir, log=log)
    train_wall = time.perf_counter() - wall0
    samples = split.test
    if test_users and test_users < len(samples):
        pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(2024))[:test_users].sort().values
        samples = samples[pick]
    t0 = time.perf_counter()
    device = next(run.model.parameters()).device
    result = evaluate_tiger(run.model, run.vocab, samples, codes, num_beams=20, batch_size=config.eval_batch_size,
                            device=device, autocast_dtype=torch.bfloat16 if profile == "gpu" else None)
    test_s = time.perf_counter() - t0
    total_wall = time.perf_counter() - wall0
    m = result["metrics"]
    log(f"test ({result['users']} users, {test_s:.0f} s, {result['users'] / test_s:.1f} users/s): "
        + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    summary = dict(profile=profile, device=device_name, threads=torch.get_num_threads(), command=command,
                   budget_min=args.budget_min if profile == "cpu" else None, train_wall_s=round(train_wall, 1),
                   total_wall_s=round(total_wall, 1), stopped=run.stopped, best_step=run.best_step,
                   train_samples_per_s=run.train_samples_per_s, test=result, config=dataclasses.asdict(config),
                   history=run.history)
    atomic_write(args.results / f"metrics-{profile}.json", lambda t: t.write_text(json.dumps(summary, indent=2)))
    atomic_write(args.results / f"history-{profile}.json", lambda t: t.write_text(json.dumps(run.history, indent=1)))
    plot_curve(run.history, args.results / f"curve-{profile}.png",
               f"TIGER on LETTER Instruments identifiers, tau={config.tau}, {profile} profile ({device_name})")
    rows = {f"ours, {profile} profile ({result['users']} test users)": m, **PAPER}
    samples_seen = run.history[-1]["step"] * config.batch_size if run.history else 0
    text = [f"# TIGER on the LETTER Instruments identifiers ({profile} profile)", "",
            f"Command: `{command}`  ", f"Device: {device_name}, {torch.get_num_threads()} threads; torch "
            f"{torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}  ",
            f"Training: {samples_seen} samples ({samples_seen / len(split.train):.2f} epochs of {len(split.train)}), "
            f"{run.train_samples_per_s:.0f} samples/s, stopped by {run.stopped}; wall {total_wall / 60:.1f} min "
            f"(test decoding {test_s:.0f} s).  ",
            f"Test: {result['users']} users" + (" (random subset, seed 2024)" if test_users else " (all)") +
            f"; identifiers {result['collisions']}.", "",
            metrics_table(rows), "", f"Learning curve: `curve-{profile}.png`, `history-{profile}.json`; "
            f"log: `log-{profile}.txt`.", ""]
    if profile == "cpu":
        text.append("**Shortened CPU run.** No GPU was available: the model, data and loss are the paper's, but the "
                    f"training budget is {args.budget_min:g} minutes on this CPU instead of ~200 epochs, so these "
                    "numbers show the direction of the curve, not the final result. The `gpu` profile of this "
                    "script is the full reproduction (< 10 min on one H100).")
    atomic_write(args.results / f"README-{profile}.md", lambda t: t.write_text("\n".join(text) + "\n"))
    log(f"wrote {args.results}")
    log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
