"""Training TIGER: AdamW, cosine schedule with warmup, early stopping on validation NDCG@10, resumable checkpoints.

The LETTER/TIGER reference recipe (docs/reference_settings.md#tiger): AdamW (lr 5e-4, weight decay 0.01), a cosine
learning-rate schedule over the planned steps with 1% linear warmup, up to 200 epochs, early stopping when validation
NDCG@10 (trie-constrained beam search, 20 beams) has not improved for ``patience`` evaluations; the ranking-guided
loss with temperature ``tau``.

* **Length-bucketed batches.** Histories run from 1 to 20 items (5 to 81 tokens). Samples are shuffled, cut into
  windows of ``bucket_window`` batches, sorted by length inside each window and chunked, and the batches shuffled
  again: each batch is padded only to its own longest row (a batch's rows have similar lengths) while the order
  stays random.
* **Checkpoints** (``out_dir/checkpoint.pt``, :mod:`letter_fast.training` format ``letter_fast.tiger.checkpoint``)
  hold model, optimizer, scheduler, every rank's RNG states, the position inside the epoch, the best score and the
  learning curve; a run restarted with the same ``out_dir`` (also after ``kill -9``) continues where it stopped and,
  on CPU without a time budget, ends with the same bytes as an uninterrupted run. ``out_dir/best.pt`` holds the
  best model, ``out_dir/history.json`` the learning curve, ``out_dir/timing.json`` the seconds and samples/s (the
  only file that differs between two identical runs). On CUDA, bf16 autocast and cuBLAS/atomic reductions are not
  bitwise deterministic: a GPU run repeats only up to that rounding noise.
* **Mixed precision**: bfloat16 autocast on CUDA (``bf16``), float32 on CPU.
* **Multi-process**: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel (gloo on
  CPU, NCCL on CUDA); every rank draws the same batch list and takes every ``world_size``-th batch; validation
  users are split over ranks and the metric sums all-reduced; rank 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from letter_fast.config import config_from_mapping, subconfig
from letter_fast.genrec.tiger import (
    CodeVocabulary,
    TigerModelConfig,
    build_tiger,
    check_item_codes,
    sequences_from_samples,
    tiger_loss,
)
from letter_fast.io import atomic_write
from letter_fast.training import (  # noqa: F401  (resolve_device, Distributed: re-exported for callers)
    BestTracker,
    CheckpointError,
    Distributed,
    LoopState,
    Timing,
    check_same_settings,
    load_checkpoint,
    prepare_out_dir,
    progress_bar,
    resolve_device,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    state_dict_cpu,
)

CHECKPOINT_KIND, MODEL_KIND, VERSION = "tiger.checkpoint", "tiger.model", 1
# settings that only change how the run is watched may differ on resume; anything else would be no continuation
_FREE_SETTINGS = ("progress", "device", "eval_batch_size", "time_budget_s", "patience")


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TigerTrainConfig(TigerModelConfig):
    """TIGER (T5 over semantic IDs) with the ranking-guided loss: the model (TigerModelConfig) and its training."""

    # loss
    tau: float = _setting(0.7, "ranking-guided loss temperature: cross-entropy over logits / tau (1.0 = plain "
                               "cross-entropy; the LETTER paper's best on Instruments is ~0.7)")
    # optimization
    lr: float = _setting(5e-4, "AdamW learning rate")
    weight_decay: float = _setting(0.01, "AdamW weight decay (not on layer-norm gains)")
    warmup_ratio: float = _setting(0.01, "share of the planned steps spent in linear warmup")
    epochs: int = _setting(200, "maximum epochs (early stopping usually ends sooner)")
    batch_size: int = _setting(256, "training samples per optimizer step (per process under torchrun)")
    grad_clip: float = _setting(1.0, "maximum gradient norm (0 = no clipping)")
    bucket_window: int = _setting(50, "batches per length-sorting window of the bucketed sampler")
    max_steps: int = _setting(0, "stop after this many optimizer steps; also the schedule length (0 = no limit)")
    time_budget_s: float = _setting(0.0, "stop training after this many seconds of training (0 = no limit); a time "
                                         "budget breaks exact repetition: prefer max_steps / epochs")
    # data
    max_history: int = _setting(20, "history items kept per sample (the most recent)")
    # validation / early stopping
    patience: int = _setting(20, "validations without a better NDCG@10 before stopping")
    eval_every_epochs: int = _setting(1, "validate after every N-th epoch (and after the last)")
    eval_every_steps: int = _setting(0, "also validate every N steps inside an epoch (0 = only at epoch ends)")
    valid_users: int = _setting(0, "validate on this many random users (0 = all)")
    num_beams: int = _setting(20, "beams of the trie-constrained beam search")
    eval_batch_size: int = _setting(256, "users per beam-search batch")
    # run
    seed: int = _setting(0, "random seed (model init, batch order, dropout)")
    device: str = _setting("auto", "auto | cpu | cuda | cuda:N")
    bf16: bool = _setting(True, "bfloat16 autocast on CUDA (ignored on CPU)")
    progress: bool = _setting(True, "show progress bars")

    def model_config(self) -> TigerModelConfig:
        return subconfig(self, TigerModelConfig)

    def validate(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        for name in ("batch_size", "eval_batch_size", "num_beams", "epochs", "bucket_window", "eval_every_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


# --------------------------------------------------------------------------------------------------- helpers


def bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                     window: int = 50) -> list[torch.Tensor]:
    """Random batches of similar-length samples (see the module docstring); every sample exactly once."""
    n = lengths.shape[0]
    perm = torch.randperm(n, generator=generator)
    span = batch_size * window
    batches = []
    for start in range(0, n, span):
        chunk = perm[start:start + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order.tolist()]


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup to the base lr over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TigerRun:
    """What :func:`train_tiger` returns: the best model (eval mode), its vocabulary, and the learning curve."""

    model: torch.nn.Module
    vocab: CodeVocabulary
    history: list
    best_metrics: dict
    best_step: int
    stopped: str
    train_samples_per_s: float


def load_tiger(path, device="cpu"):
    """Load ``best.pt`` / ``checkpoint.pt`` -> ``(model in eval mode, vocab, TigerTrainConfig)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"TIGER checkpoint not found: {path}")
    state = load_checkpoint(path, (MODEL_KIND, CHECKPOINT_KIND), VERSION, what="TIGER checkpoint")
    try:
        vocab = CodeVocabulary(**state["vocab"])
        config = config_from_mapping(TigerTrainConfig, state["config"], f"{path} settings")
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a complete letter_fast TIGER checkpoint ({type(exc).__name__}: {exc})"
                              ) from exc
    model = build_tiger(vocab, config.model_config())
    model.load_state_dict(state["model"])
    return model.to(device).eval(), vocab, config


# --------------------------------------------------------------------------------------------------- training


def train_tiger(split, codes: torch.Tensor, config: Optional[TigerTrainConfig] = None, out_dir=None,
                index=None, resume: bool = True, log=print) -> TigerRun:
    """Train TIGER on a leave-one-out ``split`` (``letter_fast.data.LeaveOneOutSplit``) with item ``codes [V, L]``.

    ``index`` is the trie (``ItemIndex``) used for validation; built from ``codes`` (collisions allowed) if omitted.
    ``out_dir`` (optional) receives checkpoints, ``best.pt`` and ``history.json``; with ``resume`` an existing
    checkpoint there is continued.
    """
    from letter_fast.genrec.evaluate import build_index, ranking_metrics

    config = config or TigerTrainConfig()
    config.validate()
    check_item_codes(codes)
    dist = Distributed(config.device)
    device = dist.device
    vocab = CodeVocabulary.for_codes(codes)
    index = index if index is not None else build_index(codes, vocab.num_codes, device=device)
    use_bf16 = config.bf16 and device.type == "cuda"
    autocast_dtype = torch.bfloat16 if use_bf16 else None

    train_seq = sequences_from_samples(codes, split.train, vocab, config.max_history)
    valid_seq = sequences_from_samples(codes, split.valid, vocab, config.max_history)
    if len(train_seq) == 0:
        raise ValueError("no training samples: every user needs at least 4 interactions to give one")
    if config.valid_users and config.valid_users < len(valid_seq):
        pick = torch.randperm(len(valid_seq), generator=torch.Generator().manual_seed(config.seed + 1))
        valid_seq = valid_seq.subset(pick[: config.valid_users].sort().values)
    # this rank's share of the validation users
    valid_seq = valid_seq.subset(torch.arange(dist.rank, len(valid_seq), dist.world))
    train_seq = train_seq.to(device)

    # dropout stream: seed * 1000 (+ the rank offset) as before the shared skeleton, so earlier results hold;
    # restored from the checkpoint on resume. The initial weights come from build_tiger's own seeded fork.
    seed_everything(config.seed * 1_000, rank=dist.rank)
    model = build_tiger(vocab, config.model_config(), seed=config.seed).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]   # layer-norm gains
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = len(train_seq) // config.batch_size + (len(train_seq) % config.batch_size > 0)
    steps_per_epoch = max(1, math.ceil(steps_per_epoch / dist.world)) if dist.enabled else steps_per_epoch
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = cosine_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)

    out_dir = prepare_out_dir(out_dir, main=dist.main)
    ckpt_path = out_dir / "checkpoint.pt" if out_dir else None
    resuming = bool(resume and ckpt_path is not None and ckpt_path.exists())
    # timings continue only with the checkpoint they belong to (a fresh start also starts the time budget afresh)
    timing = Timing(out_dir / "timing.json" if out_dir is not None and dist.main else None, resume=resuming)
    loop = LoopState()
    best = BestTracker(mode="max", patience=config.patience)
    history: list = []
    best_state = None
    if resuming:
        ckpt = load_checkpoint(ckpt_path, CHECKPOINT_KIND, VERSION)
        check_same_settings(ckpt_path, ckpt["config"], dataclasses.asdict(config), _FREE_SETTINGS)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        loop.load_state_dict(ckpt["loop"])
        best.load_state_dict(ckpt["best"])
        best.patience = config.patience                     # a free setting: the current one applies
        history = list(ckpt["history"])
        set_rng_state(ckpt["rng"][dist.rank] if dist.rank < len(ckpt["rng"]) else ckpt["rng"][0])
        if (out_dir / "best.pt").exists():
            best_state = load_checkpoint(out_dir / "best.pt", MODEL_KIND, VERSION)["model"]
        if dist.main:
            log(f"resumed from {ckpt_path} at epoch {loop.epoch} step {loop.step}")
    ddp_model = dist.wrap(model)

    def gather_rng() -> list:
        """Every rank's random streams (rank 0 writes them all, so each rank resumes its own dropout)."""
        mine = rng_state()
        if not dist.enabled:
            return [mine]
        import torch.distributed as tdist

        every = [None] * dist.world
        tdist.all_gather_object(every, mine)
        return every

    def save_files(with_best: bool) -> None:
        rngs = gather_rng() if out_dir else None
        if not (dist.main and out_dir):
            return
        payload = dict(model=model.state_dict(), vocab=dataclasses.asdict(vocab), config=dataclasses.asdict(config))
        if with_best:
            save_checkpoint(out_dir / "best.pt", MODEL_KIND, VERSION, payload)
        save_checkpoint(ckpt_path, CHECKPOINT_KIND, VERSION, dict(
            payload, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), loop=loop.state_dict(),
            best=best.state_dict(), history=history, rng=rngs))
        atomic_write(out_dir / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1)))
        timing.write()

    def validate(epoch_float: float, train_loss: float) -> bool:
        """Evaluate, record, checkpoint; True when early stopping says stop."""
        nonlocal best_state
        t0 = time.perf_counter()
        metrics, count = ranking_metrics(model, vocab, index, valid_seq, num_beams=config.num_beams,
                                         batch_size=config.eval_batch_size, device=device,
                                         autocast_dtype=autocast_dtype, sums=True)
        keys = sorted(metrics)
        totals = dist.all_reduce_sum(torch.tensor([count, train_loss] + [metrics[k] for k in keys],
                                                  dtype=torch.float64))
        train_loss = float(totals[1]) / dist.world       # mean over ranks
        totals = torch.cat([totals[:1], totals[2:]])
        metrics = {k: float(totals[i + 1] / max(totals[0].item(), 1)) for i, k in enumerate(keys)}
        improved = best.update(metrics["ndcg@10"], loop.step, metrics=metrics)
        if improved:
            best_state = state_dict_cpu(model)
        history.append(dict(epoch=round(epoch_float, 4), step=loop.step, train_loss=train_loss,
                            lr=scheduler.get_last_lr()[0], valid_users=int(totals[0]),
                            **{f"valid_{k}": v for k, v in metrics.items()}))
        timing.add("eval_seconds", time.perf_counter() - t0)
        if dist.main:
            log(f"epoch {epoch_float:.2f} step {loop.step}: loss {train_loss:.4f}  valid "
                + "  ".join(f"{k} {metrics[k]:.4f}" for k in ("recall@10", "ndcg@10"))
                + ("  (best)" if improved else f"  (no gain {best.bad_evals}/{config.patience})"))
        save_files(with_best=improved)
        return best.should_stop

    model.train()
    stop = bool(loop.stopped)
    while not stop and loop.epoch < config.epochs:
        epoch = loop.epoch
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)   # the same batch list on every rank
        batches = bucketed_batches(train_seq.lengths.cpu(), config.batch_size, gen, config.bucket_window)
        if dist.enabled:   # equal step counts on every rank
            batches = batches[: len(batches) - len(batches) % dist.world][dist.rank::dist.world]
        todo = range(loop.batch_in_epoch, len(batches))
        bar = progress_bar(todo, enabled=config.progress and dist.main, desc=f"epoch {epoch}", unit="batch",
                           leave=False)
        loss_sum, loss_n = 0.0, 0
        for b in todo:
            t0 = time.perf_counter()
            ids, mask, labels = train_seq.batch(batches[b])
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_bf16):
                loss = tiger_loss(ddp_model, ids, mask, labels, tau=config.tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum, loss_n = loss_sum + loss.detach().float(), loss_n + 1   # no device sync per step
            if device.type == "cuda" and (b + 1) % 50 == 0:
                torch.cuda.synchronize()     # keep the step timer honest without syncing every step
            timing.add("train_seconds", time.perf_counter() - t0)
            timing.add("train_samples", ids.shape[0] * dist.world)
            loop.after_step(b)
            bar.update(1)
            if loop.step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            out_of_steps = bool(config.max_steps and loop.step >= config.max_steps)
            out_of_time = bool(config.time_budget_s and timing.get("train_seconds") >= config.time_budget_s)
            if dist.enabled and config.time_budget_s:    # every rank must stop at the same step
                out_of_time = bool(dist.all_reduce_sum(torch.tensor([float(out_of_time)]))[0] > 0)
            out_of_budget = out_of_steps or out_of_time
            if out_of_budget or (config.eval_every_steps and loop.step % config.eval_every_steps == 0
                                 and b + 1 < len(batches)):
                model.eval()
                if out_of_budget:   # recorded before the validation writes the checkpoint
                    loop.stopped = "step budget" if out_of_steps else "time budget"
                stop = validate(epoch + (b + 1) / len(batches), float(loss_sum) / loss_n)
                model.train()
                loss_sum, loss_n = 0.0, 0
                if out_of_budget:
                    stop = True
                if stop:
                    break
        bar.close()
        if stop:
            break
        loop.end_epoch()
        if (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs:
            model.eval()
            stop = validate(float(epoch + 1), float(loss_sum) / max(loss_n, 1))
            model.train()
        else:
            save_files(with_best=False)
    if not loop.stopped:
        loop.stopped = "early stopping" if stop else "epochs done"
    save_files(with_best=False)
    dist.barrier()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    seconds = timing.get("train_seconds")
    rate = timing.get("train_samples") / seconds if seconds else float("nan")
    if dist.main and out_dir is not None:
        timing.set("train_samples_per_s", rate)
        timing.write()
    return TigerRun(model=model, vocab=vocab, history=history, best_metrics=dict(best.best_info.get("metrics", {})),
                    best_step=best.best_step, stopped=loop.stopped, train_samples_per_s=rate)


def train_and_evaluate_tiger(dataset, codes: torch.Tensor, config: Optional[TigerTrainConfig] = None,
                             out_dir=None, log=print) -> dict:
    """The whole TIGER stage for the pipeline: split, train (early stopping on validation), evaluate on test.

    ``dataset``: a ``letter_fast.data.Dataset``; ``codes [V, L]``: the item identifiers. Returns the test metrics
    (``recall@5``, ``ndcg@5``, ``recall@10``, ``ndcg@10``, item-level ``item_*`` variants when identifiers collide)
    plus ``best_valid_ndcg@10``, ``stopped``, ``test_users``: values that repeat exactly (the training speed is in
    ``out_dir/timing.json``, ``train_samples_per_s``).
    """
    from letter_fast.data import split_dataset
    from letter_fast.genrec.evaluate import evaluate_tiger

    config = config or TigerTrainConfig()
    split = split_dataset(dataset, max_history=config.max_history)
    run = train_tiger(split, codes, config, out_dir=out_dir, log=log)
    device = next(run.model.parameters()).device
    result = evaluate_tiger(run.model, run.vocab, split.test, codes, num_beams=config.num_beams,
                            batch_size=config.eval_batch_size, device=device,
                            autocast_dtype=torch.bfloat16 if config.bf16 and device.type == "cuda" else None,
                            max_history=config.max_history, progress=config.progress)
    metrics = dict(result["metrics"])
    metrics.update({"best_valid_ndcg@10": run.best_metrics.get("ndcg@10", float("nan")),
                    "stopped": run.stopped,
                    "test_users": result["users"]})
    return metrics
