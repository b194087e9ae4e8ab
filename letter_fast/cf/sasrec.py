"""SASRec (Kang & McAuley, ICDM 2018): the collaborative signal of LETTER and the papers' SASRec baseline.

Model. Item ``i`` has an embedding ``e_i`` (row ``i + 1`` of the table; row 0 is padding) and position ``p``
an embedding ``P_p``. A left-padded history ``x_1..x_T`` becomes ``h^0_t = sqrt(d) e_{x_t} + P_t`` and goes
through ``num_blocks`` blocks of causal self-attention and a point-wise feed-forward net, each
pre-LayerNorm with a residual, dropout (``attn_dropout`` on the attention weights) and padding rows
zeroed; a final LayerNorm gives ``F_t``.
The score of item ``j`` as the next item after position ``t`` is ``r_{t,j} = F_t . e_j`` (shared item table).

Training. Every position of a training window predicts the next item: binary cross-entropy with the true
next item ``o_t`` and one uniformly sampled negative ``n_t != o_t`` per position,

    L = - sum_t [ log sigma(r_{t,o_t}) + log(1 - sigma(r_{t,n_t})) ] / #positions,

(the original samples negatives outside the user's whole sequence; here only the target is excluded, which
keeps sampling vectorized and differs for a negligible share of draws). Adam, early stopping on the
validation NDCG@10 (full ranking over all items), best weights kept.

Runs. Seeding, checkpoints and exact resume come from ``letter_fast.training``: on CPU, without a time budget,
the same command gives the same bytes, also after ``kill -9`` and a restart. On CUDA, the attention kernels and
cuBLAS reductions are not bitwise deterministic, so GPU runs repeat only up to rounding noise.

Output. ``e_1..e_V``, the item table without the padding row, as a float32 ``[V, d]`` tensor: the CF
embeddings the LETTER tokenizer aligns its quantized embeddings with (d = 32 in the paper).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from letter_fast.config import setting
from letter_fast.data.splits import PAD, SequenceSamples, leave_one_out, training_windows
from letter_fast.io import PathLike, atomic_write, save_tensor, save_torch
from letter_fast.metrics import format_metrics, ranks_from_scores, topk_metrics
from letter_fast.training import (
    THREADS_HELP,
    BestTracker,
    LoopState,
    Timing,
    check_same_settings,
    cpu_threads,
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


@dataclass
class SASRecConfig:
    """Settings of ``letter-fast train-cf`` (commented copy: letter_fast/configs/sasrec.toml)."""

    dim: int = setting(32, "embedding size d (LETTER uses 32)")
    num_blocks: int = setting(2, "self-attention blocks")
    num_heads: int = setting(1, "attention heads (must divide dim)")
    dropout: float = setting(0.2, "dropout rate on embeddings, residual branches and FFN")
    attn_dropout: float = setting(0.0, "dropout rate on attention weights (the original "
                                       "uses the main rate; 0 halves the attention cost)")
    max_len: int = setting(20, "window / history length (the papers cut histories to 20)")
    loss: str = setting("bce", "bce: one sampled negative per position (the papers' "
                               "baseline); ce: softmax cross-entropy over all items")
    lr: float = setting(1e-3, "Adam learning rate")
    weight_decay: float = setting(0.0, "Adam L2 weight decay")
    batch_size: int = setting(256, "training windows per step")
    epochs: int = setting(200, "maximum epochs")
    patience: int = setting(10, "stop after this many evaluations without a better "
                                "validation NDCG@10")
    eval_every: int = setting(1, "evaluate on the validation split every N epochs")
    checkpoint_every: int = setting(1, "write the resumable checkpoint every N epochs")
    time_budget_min: float = setting(0.0, "stop training after this many minutes of this "
                                          "run (0 = no limit); the best weights are kept. "
                                          "A time budget breaks exact repetition: prefer "
                                          "epochs / patience")
    eval_batch_size: int = setting(2048, "users per full-ranking evaluation batch")
    seed: int = setting(0, "random seed (init, shuffling, negatives, dropout)")
    device: str = setting("cpu", "torch device")
    threads: int = setting(1, THREADS_HELP)

    def check(self) -> SASRecConfig:
        positive = ("dim", "num_blocks", "num_heads", "max_len", "batch_size", "epochs", "patience", "eval_every",
                    "checkpoint_every", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"SASRec config: {name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ValueError(f"SASRec config: num_heads ({self.num_heads}) must divide dim ({self.dim})")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.attn_dropout < 1.0):
            raise ValueError(f"SASRec config: dropout rates must be in [0, 1), got {self.dropout}, {self.attn_dropout}")
        if self.loss not in ("bce", "ce"):
            raise ValueError(f"SASRec config: loss must be 'bce' or 'ce', got {self.loss!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.time_budget_min < 0:
            raise ValueError("SASRec config: lr must be > 0, weight_decay and time_budget_min >= 0")
        return self


# Settings that change the model or the data it sees: a checkpoint is only resumed when they match.
_MODEL_KEYS = ("dim", "num_blocks", "num_heads", "max_len", "seed")


class SASRecBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float, attn_dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.dropout, self.attn_dropout = num_heads, dropout, attn_dropout
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        h = self.attn_norm(x)
        q, k, v = self.qkv(h).view(B, T, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = h + F.dropout(self.out(a.transpose(1, 2).reshape(B, T, D)), self.dropout, self.training)
        return x + self.ffn(self.ffn_norm(x))


class SASRec(nn.Module):
    """Self-attentive sequential recommender over ``num_items`` items (ids ``0..V-1``; ``PAD = -1`` pads)."""

    def __init__(self, num_items: int, *, dim: int = 32, num_blocks: int = 2, num_heads: int = 1,
                 dropout: float = 0.2, attn_dropout: float = 0.0, max_len: int = 20):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"SASRec needs at least one item, got num_items={num_items}")
        self.num_items, self.dim, self.max_len = num_items, dim, max_len
        self.item_table = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, num_heads, dropout, attn_dropout) for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(dim, eps=1e-8)
        nn.init.xavier_normal_(self.item_table.weight[1:].data)
        nn.init.xavier_normal_(self.positions.weight.data)
        with torch.no_grad():
            self.item_table.weight[0].zero_()

    def item_embeddings(self) -> torch.Tensor:
        """``[V, d]``: row i is item i (the padding row dropped)."""
        return self.item_table.weight[1:]

    def _fit_length(self, history: torch.Tensor) -> torch.Tensor:
        T = history.shape[1]
        if T > self.max_len:
            return history[:, -self.max_len:]
        if T < self.max_len:
            return F.pad(history, (self.max_len - T, 0), value=PAD)
        return history

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Left-padded ``[B, T]`` item ids (PAD = -1) -> ``[B, max_len, d]`` states ``F_t``."""
        history = self._fit_length(history)
        valid = history != PAD
        x = self.item_table(history + 1) * math.sqrt(self.dim) + self.positions.weight[None]
        x = self.emb_dropout(x) * valid[..., None]
        T = history.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=history.device).tril()
        eye = torch.eye(T, dtype=torch.bool, device=history.device)
        # attend to earlier real items; every row may attend to itself so padding rows stay finite
        attn_mask = (causal[None] & valid[:, None, :]) | eye[None]
        attn_mask = attn_mask[:, None]
        for block in self.blocks:
            x = block(x, attn_mask) * valid[..., None]
        return self.final_norm(x)

    def score_next(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` scores of every item as the next one after each (left-padded) history."""
        return self.forward(history)[:, -1] @ self.item_embeddings().T

    def bce_loss(self, inputs: torch.Tensor, targets: torch.Tensor, generator: Optional[torch.Generator] = None
                 ) -> torch.Tensor:
        """The SASRec training loss (module docstring) on ``[B, T]`` windows (PAD where no target)."""
        states = self.forward(inputs)
        targets = self._fit_length(targets)
        valid = targets != PAD
        pos = targets.clamp(min=0)
        offset = torch.randint(1, self.num_items, pos.shape, generator=generator, device="cpu").to(pos.device) \
            if self.num_items > 1 else torch.zeros_like(pos)
        neg = (pos + offset) % self.num_items  # uniform over items != target
        table = self.item_table.weight
        pos_logit = (states * table[pos + 1]).sum(-1)
        neg_logit = (states * table[neg + 1]).sum(-1)
        loss = F.softplus(-pos_logit) + F.softplus(neg_logit)  # -log s(x) = softplus(-x), -log(1 - s(x)) = softplus(x)
        return (loss * valid).sum() / valid.sum().clamp(min=1)

    def ce_loss(self, inputs: torch.Tensor, targets: torch.Tensor, generator: Optional[torch.Generator] = None
                ) -> torch.Tensor:
        """Softmax cross-entropy of the next item over all ``V`` items at every position (RecBole's default).

        ``- log softmax_j(r_{t,j})[o_t]`` averaged over real positions; costs a ``[B, T, V]`` logit tensor.
        """
        states = self.forward(inputs)
        targets = self._fit_length(targets)
        valid = targets != PAD
        logits = states[valid] @ self.item_embeddings().T
        return F.cross_entropy(logits, targets[valid])


@torch.no_grad()
def evaluate_ranking(model: SASRec, samples: SequenceSamples, *, batch_size: int = 2048, ks: Sequence[int] = (5, 10)
                     ) -> dict[str, float]:
    """Recall/NDCG@K of ``model`` on ``samples`` (one target per user), full ranking over all items."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ranks = []
    for batch in samples.batches(batch_size):
        scores = model.score_next(batch.history.to(device))
        ranks.append(ranks_from_scores(scores, batch.target.to(device)).cpu())
    model.train(was_training)
    return topk_metrics(torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long), ks)


@dataclass
class SASRecResult:
    model: SASRec
    embeddings: torch.Tensor  # [V, d] float32, from the best epoch
    valid_metrics: dict
    test_metrics: dict
    best_epoch: int
    epochs_run: int
    train_seconds: float
    log: list = field(default_factory=list)


CHECKPOINT_KIND, CHECKPOINT_VERSION = "sasrec.checkpoint", 2


def train_sasrec(
    histories: Sequence[Sequence[int]],
    num_items: int,
    config: Optional[SASRecConfig] = None,
    *,
    checkpoint: Optional[PathLike] = None,
    resume: bool = True,
    progress: bool = True,
    log_fn=print,
) -> SASRecResult:
    """Train SASRec on the leave-one-out training part of ``histories``; evaluate on validation and test.

    ``checkpoint``: path of a resumable checkpoint written every ``checkpoint_every`` epochs (atomically);
    with ``resume`` an existing one whose model settings and item count match is continued. Seeding, checkpoint
    format and exact resume come from :mod:`letter_fast.training`: without a time budget the same call gives the
    same bytes, also after a ``kill -9`` and a restart. Seconds go to ``timing.json`` beside the checkpoint.
    """
    cfg = (config or SASRecConfig()).check()
    with cpu_threads(cfg.threads):
        device = resolve_device(cfg.device)
        split = leave_one_out(histories, num_items, max_history=cfg.max_len)
        inputs, targets = training_windows(histories, cfg.max_len)
        if len(split.valid) == 0 or inputs.shape[0] == 0:
            raise ValueError("SASRec needs users with at least 4 interactions (training targets and a validation item)")

        seed_everything(cfg.seed)             # the model's initial weights and the dropout stream
        gen = torch.Generator().manual_seed(cfg.seed)   # batch order and sampled negatives
        generators = {"batches": gen}
        model = SASRec(num_items, dim=cfg.dim, num_blocks=cfg.num_blocks, num_heads=cfg.num_heads,
                       dropout=cfg.dropout, attn_dropout=cfg.attn_dropout, max_len=cfg.max_len).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
        loop, best, best_state, log = LoopState(), BestTracker(mode="max", patience=cfg.patience), None, []

        ckpt_path = Path(checkpoint) if checkpoint is not None else None
        if ckpt_path is not None:
            prepare_out_dir(ckpt_path.parent)
        resuming = bool(ckpt_path is not None and resume and ckpt_path.exists())
        timing = Timing(ckpt_path.parent / "timing.json" if ckpt_path is not None else None, resume=resuming)
        prior_seconds = timing.get("train_seconds")
        if resuming:
            state = load_checkpoint(ckpt_path, CHECKPOINT_KIND, CHECKPOINT_VERSION, what="SASRec checkpoint")
            saved = {"num_items": state["num_items"], **{k: state["config"][k] for k in _MODEL_KEYS}}
            check_same_settings(ckpt_path, saved, {"num_items": num_items, **{k: getattr(cfg, k) for k in _MODEL_KEYS}})
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            loop.load_state_dict(state["loop"])
            best.load_state_dict(state["best"])
            best_state, log = state["best_state"], list(state["log"])
            set_rng_state(state["rng"], generators)
            log_fn(f"resumed from {ckpt_path} after epoch {loop.epoch} (best valid NDCG@10 "
                   f"{best.best if best.best is not None else float('nan'):.4f} at epoch {best.best_step})")

        def save() -> None:
            save_checkpoint(ckpt_path, CHECKPOINT_KIND, CHECKPOINT_VERSION, {
                "config": asdict(cfg), "num_items": model.num_items, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "loop": loop.state_dict(), "best": best.state_dict(),
                "best_state": best_state, "log": log, "rng": rng_state(generators)})
            timing.set("train_seconds", prior_seconds + time.perf_counter() - t_start)
            timing.write()

        inputs, targets = inputs.to(device), targets.to(device)
        loss_fn = model.ce_loss if cfg.loss == "ce" else model.bce_loss
        steps_per_epoch = (inputs.shape[0] + cfg.batch_size - 1) // cfg.batch_size
        t_start = time.perf_counter()
        stopped = "max epochs"
        if best.should_stop:
            stopped = "early stop (already reached in the checkpoint)"
        else:
            with progress_bar(total=cfg.epochs, initial=loop.epoch, desc="sasrec", unit="epoch",
                              enabled=progress) as bar:
                while loop.epoch < cfg.epochs:
                    model.train()
                    order = torch.randperm(inputs.shape[0], generator=gen).to(device)
                    total = 0.0
                    for s in range(steps_per_epoch):
                        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                        loss = loss_fn(inputs[idx], targets[idx], generator=gen)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        total += loss.detach().item()
                        loop.after_step(s)
                    loop.end_epoch()
                    epoch = loop.epoch
                    entry = {"epoch": epoch, "loss": total / steps_per_epoch}
                    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                        metrics = evaluate_ranking(model, split.valid, batch_size=cfg.eval_batch_size)
                        entry.update({f"valid_{k}": v for k, v in metrics.items()})
                        if best.update(metrics["ndcg@10"], epoch):
                            best_state = state_dict_cpu(model)
                        bar.set_postfix(loss=f"{entry['loss']:.4f}", ndcg10=f"{metrics['ndcg@10']:.4f}",
                                        best=f"{best.best:.4f}@{best.best_step}")
                    log.append(entry)
                    bar.update(1)
                    elapsed = time.perf_counter() - t_start
                    done = best.should_stop
                    out_of_time = cfg.time_budget_min > 0 and elapsed > cfg.time_budget_min * 60
                    if ckpt_path is not None and (epoch % cfg.checkpoint_every == 0 or done or out_of_time
                                                  or epoch == cfg.epochs):
                        save()
                    if done:
                        stopped = f"early stop: no better validation NDCG@10 in {cfg.patience} evaluations"
                        break
                    if out_of_time:
                        stopped = f"time budget of {cfg.time_budget_min:g} min reached"
                        break
        train_seconds = prior_seconds + time.perf_counter() - t_start
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        valid_metrics = evaluate_ranking(model, split.valid, batch_size=cfg.eval_batch_size)
        test_metrics = evaluate_ranking(model, split.test, batch_size=cfg.eval_batch_size)
        log_fn(f"{stopped} after epoch {loop.epoch}; best epoch {max(best.best_step, 0)}")
        log_fn(f"valid: {format_metrics(valid_metrics)}")
        log_fn(f"test:  {format_metrics(test_metrics)}")
        return SASRecResult(model=model, embeddings=model.item_embeddings().detach().cpu().float().contiguous(),
                            valid_metrics=valid_metrics, test_metrics=test_metrics, best_epoch=max(best.best_step, 0),
                            epochs_run=loop.epoch, train_seconds=train_seconds, log=log)


def save_result(result: SASRecResult, out_dir: PathLike, name: str, config: SASRecConfig) -> dict[str, Path]:
    """Write ``<Name>.sasrec-emb{d}.pt`` ([V, d] float32), ``metrics.json`` and the model weights, atomically;
    the training seconds go to ``timing.json`` (so that ``metrics.json`` repeats byte for byte)."""
    out_dir = Path(out_dir)
    emb_path = out_dir / f"{name}.sasrec-emb{result.embeddings.shape[1]}.pt"
    save_tensor(result.embeddings, emb_path)
    model_path = out_dir / "sasrec.model.pt"
    save_torch(result.model.state_dict(), model_path)
    summary = {"data_set": name, "num_items": result.model.num_items, "config": asdict(config),
               "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "valid": result.valid_metrics,
               "test": result.test_metrics, "log": result.log}
    metrics_path = out_dir / "metrics.json"
    atomic_write(metrics_path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    timing = Timing(out_dir / "timing.json")
    timing.set("train_seconds", result.train_seconds)
    timing.write()
    return {"embeddings": emb_path, "model": model_path, "metrics": metrics_path}


__all__ = ["SASRecConfig", "SASRec", "SASRecResult", "train_sasrec", "evaluate_ranking", "save_result"]
