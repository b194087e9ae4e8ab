"""Training loop of the LETTER tokenizer: AdamW, shuffled batches, resumable checkpoints, and
model selection by collision rate (then loss), as the reference does.

Built on :mod:`letter_fast.training`: the global streams are seeded from ``seed`` and the batch order and
diversity positives come from one generator, all of which the checkpoint carries, so a resumed run (also after
``kill -9``) ends with the same bytes as an uninterrupted one. Files in ``out_dir``: ``tokenizer.ckpt``
(resumable), ``best.pt`` (the selected model), ``training.json`` (the learning curve and the selection) and
``timing.json`` (seconds per epoch: the only file that differs between two identical runs), and with
``curve_every > 0`` the learning curve of the identifiers, ``curve.csv`` (:mod:`letter_fast.tokenizer.curve`).
Exact on CPU; on CUDA, bf16 autocast (``mlp_precision="bf16"``) and the GPU reductions (cuBLAS, atomics in
scatter/index backward) are not bitwise deterministic, so a GPU run repeats only up to rounding noise.

Under torchrun (``WORLD_SIZE > 1``; gloo on CPU, NCCL on GPU, one GPU per rank) the loop runs data-parallel
(:mod:`letter_fast.tokenizer.distributed`): ``batch_size`` is the global batch, every rank draws the same
permutation and takes its contiguous slice of each batch, the model is wrapped in DistributedDataParallel, and
Sinkhorn, the CF negatives and the diversity draws cover the global batch, so ``W`` ranks train the model one
process trains, up to float rounding. The k-means start runs on rank 0 and is broadcast; the diversity clusters are
computed on every rank from the (identical) codebooks and rank 0's are broadcast. Every rank's global streams are
seeded alike (the tokenizer draws nothing per rank), so the checkpoint (written by rank 0 only, as every file) holds
no per-rank state: a run may be resumed with any number of ranks. Evaluation (the collision rate) encodes every
item once, its chunks split over the ranks (:func:`letter_fast.tokenizer.stream.encode_all`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

import torch

from letter_fast.config import setting
from letter_fast.io import atomic_write
from letter_fast.tokenizer.collisions import collision_rate
from letter_fast.tokenizer.curve import CURVE_FILE, curve_row, write_curve
from letter_fast.tokenizer.diagnostics import cf_neighbours
from letter_fast.tokenizer.distributed import BatchShard, broadcast_module, broadcast_tensor
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.stream import as_rows, encode_all, encode_codes, init_codebooks_sampled
from letter_fast.training import (
    THREADS_HELP,
    BestTracker,
    Distributed,
    LoopState,
    Timing,
    check_same_settings,
    cpu_threads,
    load_checkpoint,
    prepare_out_dir,
    progress_bar,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)

CHECKPOINT_KIND, MODEL_KIND, VERSION = "tokenizer.checkpoint", "tokenizer.model", 1
# settings that may change when a run is continued: they do not change what an epoch computes (kmeans_sample only
# shapes the start, which a checkpoint already holds)
_FREE_SETTINGS = ("epochs", "checkpoint_every", "device", "threads", "progress", "kmeans_sample")
# settings added after checkpoints were first written, with the value that reproduces those checkpoints' runs
_ADDED_TRAIN_SETTINGS = {"curve_every": 0}
_ADDED_MODEL_SETTINGS = {"cf_gradient": "encoder+codebooks", "codebook_init": "kmeans", "residual_chain": "stopped"}


@dataclasses.dataclass
class TokenizerTrainConfig:
    """Training: AdamW over shuffled batches of items, model selection by collision rate."""

    epochs: int = setting(200, "passes over all items (the paper trains up to 20k; the best model by collision "
                               "rate is kept)")
    batch_size: int = setting(1024, "items per step")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    eval_every: int = setting(10, "epochs between collision-rate evaluations (model selection)")
    checkpoint_every: int = setting(50, "epochs between resumable checkpoints")
    curve_every: int = setting(0, "epochs between rows of <out-dir>/curve.csv, the identifiers' learning curve "
                                  "(codes used, entropy, Gini, collisions, CF-pair similarity, losses); 0 = none")
    seed: int = setting(0, "random seed")
    device: str = setting("cpu", "torch device (\"cpu\", \"cuda\")")
    threads: int = setting(1, THREADS_HELP)
    progress: bool = setting(True, "show a progress bar")
    kmeans_sample: int = setting(65536, "items the k-means codebook initialization runs on: a seeded sample of "
                                        "larger catalogs (0 = all items, as before; the LETTER code uses its "
                                        "first batch)")


def _checkpoint_path(out_dir: Path) -> Path:
    return out_dir / "tokenizer.ckpt"


def load_tokenizer(path, device: str = "cpu") -> LetterTokenizer:
    """A trained tokenizer from a ``tokenizer.ckpt`` or a ``best.pt`` written by :func:`train_tokenizer`."""
    state = load_checkpoint(path, (MODEL_KIND, CHECKPOINT_KIND), VERSION, map_location="cpu",
                            what="tokenizer checkpoint")
    settings = dict(state["settings"])
    if "model" in settings and "train" in settings:
        settings = dict(settings["model"])   # a resumable checkpoint keeps the model's settings next to the loop's
    settings["diversity_cluster_sizes"] = tuple(settings["diversity_cluster_sizes"])
    settings["hidden_dims"] = tuple(settings["hidden_dims"])
    model = LetterTokenizer(**settings)
    model.load_state_dict(state["model"])
    return model.to(device)


def train_tokenizer(model: LetterTokenizer, embeddings: torch.Tensor, cf: Optional[torch.Tensor],
                    config: TokenizerTrainConfig, out_dir, resume: bool = True,
                    dist: Optional[Distributed] = None) -> dict:
    """Train ``model`` on item ``embeddings [V, D]`` (and CF embeddings ``cf [V, d]``).

    Writes ``out_dir/tokenizer.ckpt`` (resumable, every ``checkpoint_every`` epochs and at the end),
    ``out_dir/best.pt`` (lowest collision rate, ties broken by loss), ``training.json`` and ``timing.json``.
    Returns the training summary (history, best epoch, config, seconds per epoch from ``timing.json``).
    The caller builds ``model``; build it under ``letter_fast.training.seeded(seed)`` for a repeatable start.
    ``dist``: the torchrun context (default: from the environment; one process when ``WORLD_SIZE`` is unset), see
    the module docstring; only rank 0 writes files.
    """
    with cpu_threads(config.threads):
        if config.curve_every < 0:
            raise ValueError(f"curve_every must be >= 0 (0 = no curve), got {config.curve_every}")
        if dist is None:
            dist = Distributed(config.device)
        parallel = dist.enabled
        main = dist.main
        out_dir = prepare_out_dir(out_dir, main=main)
        device = dist.device if parallel else torch.device(config.device)
        model.to(device)
        embeddings = as_rows(embeddings, device)   # a tensor, or a memory map read batch by batch (stream.py)
        cf = cf.to(device).float() if cf is not None else None
        if cf is not None and cf.shape[0] != embeddings.shape[0]:
            raise ValueError(f"CF embeddings have {cf.shape[0]} rows but there are {embeddings.shape[0]} items")
        if parallel:
            tail = len(embeddings) % config.batch_size
            if min(config.batch_size, len(embeddings)) < dist.world or 0 < tail < dist.world:
                raise ValueError(
                    f"{dist.world} ranks cannot share batches of {config.batch_size} items over {len(embeddings)} "
                    f"items (a batch of {tail or config.batch_size} items leaves a rank with none): every batch needs "
                    "at least one item per rank; change batch_size or the number of processes")
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        generators = {"batches": generator}
        loop, history, curve = LoopState(), [], []
        best = BestTracker(mode="min")
        ckpt = _checkpoint_path(out_dir)
        resuming = bool(resume and ckpt.exists())
        # timings continue only with their checkpoint
        timing = Timing(out_dir / "timing.json" if main else None, resume=resuming)
        settings = {"model": model.settings(), "train": dataclasses.asdict(config)}
        if resuming:
            state = load_checkpoint(ckpt, CHECKPOINT_KIND, VERSION, map_location=device)
            saved_model = {**_ADDED_MODEL_SETTINGS, **state["settings"]["model"]}
            check_same_settings(ckpt, {**_ADDED_TRAIN_SETTINGS, **state["settings"]["train"], "model": saved_model},
                                {**settings["train"], "model": settings["model"]}, _FREE_SETTINGS)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            loop.load_state_dict(state["loop"])
            best.load_state_dict(state["best"])
            history = list(state["history"])
            curve = list(state.get("curve", []))
            set_rng_state(state["rng"], generators)
        else:
            seed_everything(config.seed)
            if not bool(model.initialized):
                if main:
                    init_codebooks_sampled(model, embeddings, seed=config.seed, sample=config.kmeans_sample)
            if parallel:   # rank 0's start (the k-means codebooks, and the weights) on every rank
                broadcast_module(model)
        step_model = dist.wrap(model) if parallel else model

        def save() -> None:
            if not main:
                return
            save_checkpoint(ckpt, CHECKPOINT_KIND, VERSION, {
                "settings": settings, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loop": loop.state_dict(), "best": best.state_dict(), "history": history, "curve": curve,
                "rng": rng_state(generators)})
            timing.write()

        V = len(embeddings)
        neighbours = None
        if config.curve_every and main:
            # the file restarts from the checkpoint's rows: rows a killed run wrote past its checkpoint come again
            write_curve(out_dir / CURVE_FILE, curve, model.num_levels)
            neighbours = cf_neighbours(cf.cpu()) if cf is not None else None
            if not resuming:   # epoch 0: the identifiers of the k-means start
                model.eval()
                curve.append(curve_row(encode_codes(model, embeddings), model.codebook_size, 0, None, neighbours))
                write_curve(out_dir / CURVE_FILE, curve, model.num_levels)
        bar = progress_bar(range(loop.epoch, config.epochs), desc="tokenizer", enabled=config.progress and main,
                           initial=loop.epoch, total=config.epochs)
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            if model.beta > 0:
                model.refresh_code_clusters(seed=config.seed + epoch)
                if parallel:   # the same inputs give the same clusters; rank 0's make sure of it
                    broadcast_tensor(model.code_clusters)
            perm = torch.randperm(V, generator=generator).to(device)
            totals = {"loss": 0.0, "recon": 0.0, "codebook": 0.0, "cf": 0.0, "diversity": 0.0}
            batches = 0
            for b, idx in enumerate(perm.split(config.batch_size)):
                if parallel:
                    shard, local = BatchShard.split(idx, dist.rank, dist.world, cf)
                    out = step_model(embeddings.rows(local), cf[local] if cf is not None else None, generator=generator,
                                     shard=shard)
                else:
                    out = model(embeddings.rows(idx), cf[idx] if cf is not None else None, generator=generator)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                for key in totals:
                    value = float(out[key].detach())
                    if parallel:   # the global batch's mean is the sum over the ranks of these shares
                        value *= 1 / dist.world if key == "loss" else (shard.stop - shard.start) / shard.total
                    totals[key] += value
                batches += 1
                loop.after_step(b)
            if parallel:
                keys = list(totals)
                summed = dist.all_reduce_sum(torch.tensor([totals[k] for k in keys], dtype=torch.float64,
                                                          device=device))
                totals = dict(zip(keys, summed.tolist()))
            loop.end_epoch()
            record = {"epoch": epoch + 1, **{k: v / batches for k, v in totals.items()}}
            timing.add("train_seconds", time.perf_counter() - t0)
            timing.add("epochs_timed", 1)
            last = epoch + 1 == config.epochs
            codes = None
            if (epoch + 1) % config.eval_every == 0 or last:
                model.eval()
                if parallel:   # the chunks split over the ranks, the rate computed on rank 0 and sent to all
                    codes, _ = encode_all(model, embeddings, residuals=False, dist=dist)
                    codes = torch.from_numpy(codes) if main else None
                    rate = torch.tensor([collision_rate(codes) if main else 0.0], dtype=torch.float64, device=device)
                    record["collision_rate"] = float(broadcast_tensor(rate)[0])
                else:
                    codes = encode_codes(model, embeddings)
                    record["collision_rate"] = collision_rate(codes)
                if best.update([record["collision_rate"], record["loss"]], epoch + 1) and main:
                    save_checkpoint(out_dir / "best.pt", MODEL_KIND, VERSION,
                                    {"model": model.state_dict(), "settings": model.settings(), "epoch": epoch + 1})
                bar.set_postfix(loss=f"{record['loss']:.4f}", collisions=f"{record['collision_rate']:.4f}")
            if config.curve_every and main and (epoch + 1) % config.curve_every == 0:
                if codes is None:
                    model.eval()
                    codes = encode_codes(model, embeddings)
                curve.append(curve_row(codes, model.codebook_size, epoch + 1, record, neighbours))
                write_curve(out_dir / CURVE_FILE, curve, model.num_levels)
            history.append(record)
            if (epoch + 1) % config.checkpoint_every == 0 or last:
                save()
        bar.close()
        best_summary = {"collision_rate": best.best[0] if best.best else float("inf"),
                        "loss": best.best[1] if best.best else float("inf"), "epoch": best.best_step}
        summary = {"best": best_summary, "history": history, "config": dataclasses.asdict(config)}
        if main:
            atomic_write(out_dir / "training.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
        timing.write()
        dist.barrier()   # rank 0's files are complete before any rank goes on
        n = timing.get("epochs_timed")
        return {**summary, "seconds_per_epoch": timing.get("train_seconds") / n if n else None}
