"""Training loop of the LETTER tokenizer: AdamW, shuffled batches, resumable checkpoints, and
model selection by collision rate (then loss), as the reference does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from letter_fast.io import atomic_write
from letter_fast.tokenizer.collisions import collision_rate
from letter_fast.tokenizer.model import LetterTokenizer


def _setting(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TokenizerTrainConfig:
    """Training: AdamW over shuffled batches of items, model selection by collision rate."""

    epochs: int = _setting(200, "passes over all items (the paper trains up to 20k; the best model by collision "
                                "rate is kept)")
    batch_size: int = _setting(1024, "items per step")
    lr: float = _setting(1e-3, "AdamW learning rate")
    weight_decay: float = _setting(1e-4, "AdamW weight decay")
    eval_every: int = _setting(10, "epochs between collision-rate evaluations (model selection)")
    checkpoint_every: int = _setting(50, "epochs between resumable checkpoints")
    seed: int = _setting(0, "random seed")
    device: str = _setting("cpu", "torch device (\"cpu\", \"cuda\")")
    progress: bool = _setting(True, "show a progress bar")


def _checkpoint_path(out_dir: Path) -> Path:
    return out_dir / "tokenizer.ckpt"


def save_checkpoint(path: Path, model, optimizer, epoch: int, best: dict, history: list, rng: torch.Tensor) -> None:
    state = {"model": model.state_dict(), "settings": model.settings(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "best": best, "history": history, "rng": rng}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_tokenizer(path, device: str = "cpu") -> LetterTokenizer:
    """A trained tokenizer from a checkpoint or a ``best.pt`` written by :func:`train_tokenizer`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer checkpoint not found: {path}")
    state = torch.load(path, map_location=device, weights_only=False)
    settings = dict(state["settings"])
    settings["diversity_cluster_sizes"] = tuple(settings["diversity_cluster_sizes"])
    model = LetterTokenizer(**settings)
    model.load_state_dict(state["model"])
    return model.to(device)


def train_tokenizer(model: LetterTokenizer, embeddings: torch.Tensor, cf: Optional[torch.Tensor],
                    config: TokenizerTrainConfig, out_dir, resume: bool = True) -> dict:
    """Train ``model`` on item ``embeddings [V, D]`` (and CF embeddings ``cf [V, d]``).

    Writes ``out_dir/tokenizer.ckpt`` (resumable, every ``checkpoint_every`` epochs and at the
    end) and ``out_dir/best.pt`` (lowest collision rate, ties broken by loss). Returns the
    training summary (history, best epoch, seconds per epoch).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    model.to(device)
    embeddings = embeddings.to(device).float()
    cf = cf.to(device).float() if cf is not None else None
    if cf is not None and cf.shape[0] != embeddings.shape[0]:
        raise ValueError(f"CF embeddings have {cf.shape[0]} rows but there are {embeddings.shape[0]} items")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    start_epoch, history = 0, []
    best = {"collision_rate": math.inf, "loss": math.inf, "epoch": -1}
    ckpt = _checkpoint_path(out_dir)
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, history = state["epoch"], state["best"], state["history"]
        generator.set_state(state["rng"])
    elif not bool(model.initialized):
        model.init_codebooks(embeddings, seed=config.seed)

    V = embeddings.shape[0]
    epoch_seconds = []
    bar = tqdm(range(start_epoch, config.epochs), desc="tokenizer", disable=not config.progress,
               initial=start_epoch, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        if model.beta > 0:
            model.refresh_code_clusters(seed=config.seed + epoch)
        perm = torch.randperm(V, generator=generator).to(device)
        totals = {"loss": 0.0, "recon": 0.0, "codebook": 0.0, "cf": 0.0, "diversity": 0.0}
        batches = 0
        for idx in perm.split(config.batch_size):
            out = model(embeddings[idx], cf[idx] if cf is not None else None, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            for key in totals:
                totals[key] += float(out[key].detach())
            batches += 1
        record = {"epoch": epoch + 1, **{k: v / batches for k, v in totals.items()}}
        epoch_seconds.append(time.perf_counter() - t0)
        last = epoch + 1 == config.epochs
        if (epoch + 1) % config.eval_every == 0 or last:
            model.eval()
            codes, _ = model.encode_items(embeddings)
            record["collision_rate"] = collision_rate(codes)
            key = (record["collision_rate"], record["loss"])
            if key < (best["collision_rate"], best["loss"]):
                best = {"collision_rate": record["collision_rate"], "loss": record["loss"], "epoch": epoch + 1}
                atomic_write(out_dir / "best.pt", lambda tmp: torch.save(
                    {"model": model.state_dict(), "settings": model.settings(), "epoch": epoch + 1}, tmp))
            bar.set_postfix(loss=f"{record['loss']:.4f}", collisions=f"{record['collision_rate']:.4f}")
        history.append(record)
        if (epoch + 1) % config.checkpoint_every == 0 or last:
            save_checkpoint(ckpt, model, optimizer, epoch + 1, best, history, generator.get_state())
    summary = {"best": best, "history": history, "config": dataclasses.asdict(config),
               "seconds_per_epoch": (sum(epoch_seconds) / len(epoch_seconds)) if epoch_seconds else None}
    atomic_write(out_dir / "training.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return summary
