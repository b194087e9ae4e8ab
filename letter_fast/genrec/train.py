"""Training TIGER: AdamW, cosine schedule with warmup, early stopping on validation NDCG@10, resumable checkpoints.

The LETTER/TIGER reference recipe (docs/reference_settings.md#tiger): AdamW (lr 5e-4, weight decay 0.01), a cosine
learning-rate schedule over the planned steps with 1% linear warmup, up to 200 epochs, early stopping when validation
NDCG@10 (trie-constrained beam search, 20 beams) has not improved for ``patience`` evaluations; the ranking-guided
loss with temperature ``tau``.

* **Length-bucketed batches.** Histories run from 1 to 20 items (5 to 81 tokens). Samples are shuffled, cut into
  windows of ``bucket_window`` batches, sorted by length inside each window and chunked, and the batches shuffled
  again: each batch is padded only to its own longest row (a batch's rows have similar lengths) while the order
  stays random.
* **The loop** is :func:`letter_fast.training.fit`; this module supplies the batches, the loss and the validation.
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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from letter_fast.config import config_from_mapping, setting, subconfig
from letter_fast.genrec.tiger import (
    CodeVocabulary,
    TigerModelConfig,
    build_tiger,
    check_item_codes,
    sequences_from_samples,
    tiger_loss,
)
from letter_fast.training import (  # noqa: F401  (resolve_device, Distributed: re-exported for callers)
    THREADS_HELP,
    CheckpointError,
    Distributed,
    FitSettings,
    TrainTask,
    check_same_settings,
    cpu_threads,
    fit,
    load_checkpoint,
    resolve_device,
    seed_everything,
)

CHECKPOINT_KIND, MODEL_KIND, VERSION = "tiger.checkpoint", "tiger.model", 1
# settings that only change how the run is watched may differ on resume; anything else would be no continuation
_FREE_SETTINGS = ("progress", "device", "threads", "eval_batch_size", "time_budget_s", "patience")


@dataclass
class TigerTrainConfig(TigerModelConfig):
    """TIGER (T5 over semantic IDs) with the ranking-guided loss: the model (TigerModelConfig) and its training."""

    # loss
    tau: float = setting(0.7, "ranking-guided loss temperature: cross-entropy over logits / tau (1.0 = plain "
                              "cross-entropy; the LETTER paper's best on Instruments is ~0.7)")
    # optimization
    lr: float = setting(5e-4, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay (not on layer-norm gains)")
    warmup_ratio: float = setting(0.01, "share of the planned steps spent in linear warmup")
    epochs: int = setting(200, "maximum epochs (early stopping usually ends sooner)")
    batch_size: int = setting(256, "training samples per optimizer step (per process under torchrun)")
    grad_clip: float = setting(1.0, "maximum gradient norm (0 = no clipping)")
    bucket_window: int = setting(50, "batches per length-sorting window of the bucketed sampler")
    max_steps: int = setting(0, "stop after this many optimizer steps; also the schedule length (0 = no limit)")
    time_budget_s: float = setting(0.0, "stop training after this many seconds of training (0 = no limit); a time "
                                        "budget breaks exact repetition: prefer max_steps / epochs")
    # data
    max_history: int = setting(20, "history items kept per sample (the most recent)")
    # validation / early stopping
    patience: int = setting(20, "validations without a better NDCG@10 before stopping")
    eval_every_epochs: int = setting(1, "validate after every N-th epoch (and after the last)")
    eval_every_steps: int = setting(0, "also validate every N steps inside an epoch (0 = only at epoch ends)")
    valid_users: int = setting(0, "validate on this many random users (0 = all)")
    num_beams: int = setting(20, "beams of the trie-constrained beam search")
    eval_batch_size: int = setting(256, "users per beam-search batch")
    # run
    seed: int = setting(0, "random seed (model init, batch order, dropout)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    threads: int = setting(1, THREADS_HELP)
    bf16: bool = setting(True, "bfloat16 autocast on CUDA (ignored on CPU)")
    progress: bool = setting(True, "show progress bars")

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
    from letter_fast.genrec.evaluate import build_index

    config = config or TigerTrainConfig()
    config.validate()
    with cpu_threads(config.threads):
        check_item_codes(codes)
        dist = Distributed(config.device)
        device = dist.device
        vocab = CodeVocabulary.for_codes(codes)
        index = index if index is not None else build_index(codes, vocab.num_codes, device=device)

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
        task = _TigerTask(config, model, vocab, index, train_seq, valid_seq, dist)
        settings = FitSettings(epochs=config.epochs, select="ndcg@10", mode="max", patience=config.patience,
                               max_steps=config.max_steps, time_budget_s=config.time_budget_s,
                               eval_every_epochs=config.eval_every_epochs, eval_every_steps=config.eval_every_steps,
                               grad_clip=config.grad_clip, progress=config.progress, count_name="valid_users",
                               log_metrics=("recall@10", "ndcg@10"))
        result = fit(task, settings, out_dir, dist=dist, resume=resume, log=log)
        return TigerRun(model=model, vocab=vocab, history=result.history, best_metrics=result.best_metrics,
                        best_step=result.best_step, stopped=result.stopped,
                        train_samples_per_s=result.train_samples_per_s)


class _TigerTask(TrainTask):
    """TIGER's side of :func:`letter_fast.training.fit`: length-bucketed batches, the ranking-guided loss, beam-search
    validation on this rank's users."""

    checkpoint_kind, model_kind, version = CHECKPOINT_KIND, MODEL_KIND, VERSION

    def __init__(self, config: TigerTrainConfig, model, vocab, index, train_seq, valid_seq, dist: Distributed):
        self.config, self.model, self.vocab, self.index = config, model, vocab, index
        self.train_seq, self.valid_seq, self.dist = train_seq, valid_seq, dist
        self.use_bf16 = config.bf16 and dist.device.type == "cuda"
        self.autocast_dtype = torch.bfloat16 if self.use_bf16 else None
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]   # layer-norm gains
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        steps_per_epoch = len(train_seq) // config.batch_size + (len(train_seq) % config.batch_size > 0)
        steps_per_epoch = max(1, math.ceil(steps_per_epoch / dist.world)) if dist.enabled else steps_per_epoch
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        self.scheduler = cosine_with_warmup(self.optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)

    def batches(self, epoch: int) -> list:
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)   # the same batch list on every rank
        return bucketed_batches(self.train_seq.lengths.cpu(), self.config.batch_size, gen, self.config.bucket_window)

    def train_step(self, model, batch) -> torch.Tensor:
        ids, mask, labels = self.train_seq.batch(batch)
        with torch.autocast(self.dist.device.type, dtype=self.autocast_dtype, enabled=self.use_bf16):
            return tiger_loss(model, ids, mask, labels, tau=self.config.tau)

    def validate(self):
        from letter_fast.genrec.evaluate import ranking_metrics

        return ranking_metrics(self.model, self.vocab, self.index, self.valid_seq, num_beams=self.config.num_beams,
                               batch_size=self.config.eval_batch_size, device=self.dist.device,
                               autocast_dtype=self.autocast_dtype, sums=True)

    def payload(self) -> dict:
        return dict(model=self.model.state_dict(), vocab=dataclasses.asdict(self.vocab),
                    config=dataclasses.asdict(self.config))

    def check_resume(self, path, checkpoint) -> None:
        check_same_settings(path, checkpoint["config"], dataclasses.asdict(self.config), _FREE_SETTINGS)


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
    with cpu_threads(config.threads):
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
