"""From item embeddings to collision-free identifiers on disk.

``tokenize_items`` trains a :class:`LetterTokenizer` (or loads a trained one), encodes every item
by nearest codes, re-assigns colliding last-level codes (collisions.py), and writes:

* ``<Name>.index.json``: the identifiers in the LC-Rec/LETTER format (``["<a_12>", "<b_201>", ...]``);
* ``<Name>.codes.pt``: the same as a ``[V, L]`` int64 tensor, and ``<Name>.codes.npy`` (the fast path:
  ``np.load(..., mmap_mode="r")``);
* ``tokenizer_report.json``: the diagnostics of :mod:`letter_fast.tokenizer.diagnostics`;
* ``first_level_codes.png``: the first-level code load.

``embeddings`` may be a tensor or a memory-mapped ``.npy`` (:func:`letter_fast.tokenizer.stream.open_embeddings`):
training streams batches from it, k-means starts from a sample, encoding runs in chunks, and the re-assignment is
vectorized (:mod:`letter_fast.tokenizer.assign`), so a 1e7-item catalog fits a few GB.

All writes are atomic (temporary file + rename). The model is built under ``letter_fast.training.seeded(seed)``:
the same command with the same seed writes the same bytes (seconds go to ``timing.json`` only).

Under torchrun the training is data-parallel (:mod:`letter_fast.tokenizer.train`), the final encoding splits the
catalog's chunks over the ranks and gathers them on rank 0 (:func:`letter_fast.tokenizer.stream.encode_all`), and
rank 0 alone de-collides and writes the outputs; the other ranks return ``{"rank": r}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from letter_fast._optional import available
from letter_fast.data.formats import write_index_json
from letter_fast.io import atomic_write, save_tensor
from letter_fast.tokenizer.assign import reassign_collisions
from letter_fast.tokenizer.diagnostics import inspect_codes, plot_first_level
from letter_fast.tokenizer.model import LetterTokenizer
from letter_fast.tokenizer.stream import encode_all
from letter_fast.tokenizer.train import TokenizerTrainConfig, load_tokenizer, train_tokenizer
from letter_fast.training import Distributed, cpu_threads, seeded

# above this many items the CF-nearest-neighbour code similarity (O(V^2) similarities) is left out of the report
CF_SIMILARITY_MAX_ITEMS = 200_000


@torch.no_grad()
def collision_free_codes(model: LetterTokenizer, embeddings, chunk_rows: int = 65536, dist: Optional[Distributed] = None
                         ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(codes, codes_before)``: identifiers after and before collision re-assignment (chunked encoding; under
    torchrun ``dist`` splits the encoding over the ranks, and ranks other than 0 get None)."""
    model.eval()
    before, residuals = encode_all(model, embeddings, chunk_rows=chunk_rows, dist=dist)
    if before is None:
        return None
    fixed = reassign_collisions(before, residuals, model.codebooks[model.num_levels - 1].detach().cpu())
    return torch.from_numpy(fixed), torch.from_numpy(before)


def tokenize_items(
    embeddings,
    cf: Optional[torch.Tensor],
    out_dir,
    name: str,
    model_settings: dict,
    train_config: TokenizerTrainConfig,
    resume: bool = True,
) -> dict:
    """Train, encode, de-collide and write identifiers; returns the diagnostics report (plus
    ``seconds_per_epoch``, which ``tokenizer_report.json`` leaves out so that it repeats exactly)."""
    with cpu_threads(train_config.threads):
        out_dir = Path(out_dir)
        with seeded(train_config.seed):   # the MLP's initial weights depend on the seed alone
            model = LetterTokenizer(input_dim=embeddings.shape[1], **model_settings)
        dist = Distributed(train_config.device)
        summary = train_tokenizer(model, embeddings, cf, train_config, out_dir, resume=resume, dist=dist)
        best = out_dir / "best.pt"   # complete: training ends with a barrier after rank 0's writes
        if best.exists():
            model = load_tokenizer(best, dist.device if dist.enabled else train_config.device)
        encoded = collision_free_codes(model, embeddings, dist=dist if dist.enabled else None)
        if encoded is None:   # a rank other than 0 under torchrun: rank 0 writes the outputs
            return {"rank": dist.rank, "seconds_per_epoch": summary["seconds_per_epoch"]}
        codes, before = encoded
        write_index_json(out_dir / f"{name}.index.json", codes)
        save_tensor(codes, out_dir / f"{name}.codes.pt")
        save_tensor(codes, out_dir / f"{name}.codes.npy")
        small = codes.shape[0] <= CF_SIMILARITY_MAX_ITEMS
        report = inspect_codes(codes, model.codebook_size, cf=cf if small else None, codes_before=before)
        report.update(best_epoch=summary["best"]["epoch"], settings=model.settings(), train_config=summary["config"])
        atomic_write(out_dir / "tokenizer_report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
        if available("matplotlib"):  # the plot is optional: pip install "letter_fast[plot]"
            plot_first_level(codes, model.codebook_size, out_dir / "first_level_codes.png")
        return {**report, "seconds_per_epoch": summary["seconds_per_epoch"]}
