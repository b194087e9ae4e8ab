"""The tokenizer's learning curve: how the identifiers develop over training, in ``<out-dir>/curve.csv``.

Every ``curve_every`` epochs (:class:`~letter_fast.tokenizer.train.TokenizerTrainConfig`) the training encodes all
items by nearest codes, as at inference, and appends one row; a fresh run starts with a row for epoch 0, the
k-means start, whose loss columns are empty:

=============================  ===================================================================================
column                         meaning
=============================  ===================================================================================
``epoch``                      epochs done (0: the k-means start; 1-based after that, like ``training.json``)
``codes_used_<l>``             codes of level ``l`` (1..L) that at least one item uses
``entropy_bits_<l>``           entropy of level ``l``'s code load in bits (``log2 N`` = uniform over all N codes)
``first_level_gini``           Gini coefficient of the first-level code load (0 = even, -> 1 = all on one code)
``collision_rate_before``      share of items whose identifier another item also has, before the re-assignment
                               that the final identifiers get (:mod:`letter_fast.tokenizer.collisions`)
``cf_pair_code_similarity``    share of code positions an item shares with its CF-nearest item (Table 4 of the
                               paper; :func:`~letter_fast.tokenizer.diagnostics.cf_neighbour_code_similarity`);
                               empty without CF embeddings
``loss`` ``recon`` ``rq``      the loss terms averaged over the epoch's batches: the total, ``L_recon``,
``cf`` ``diversity``           ``mean_l L_cb,l`` (the RQ-VAE codebook + commitment term), ``L_CF`` and
                               ``mean_l L_div,l``, unweighted (the total applies alpha and beta)
=============================  ===================================================================================

The rows travel in the resumable checkpoint and the file is rewritten from them atomically, so a run resumed
after an interruption ends with the same bytes as an uninterrupted one (rows past the last checkpoint are
computed again, identically). Measuring draws no random numbers: the curve does not change the training.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Sequence

import torch

from letter_fast.io import atomic_write
from letter_fast.tokenizer.collisions import collision_rate
from letter_fast.tokenizer.diagnostics import entropy_bits, gini, neighbour_code_similarity

CURVE_FILE = "curve.csv"
LOSS_COLUMNS = ("loss", "recon", "rq", "cf", "diversity")
# the training record's keys of the loss columns
_RECORD_KEYS = {"loss": "loss", "recon": "recon", "rq": "codebook", "cf": "cf", "diversity": "diversity"}


def curve_columns(num_levels: int) -> list[str]:
    """The header of ``curve.csv`` for identifiers of ``num_levels`` levels."""
    levels = range(1, num_levels + 1)
    return (["epoch"] + [f"codes_used_{i}" for i in levels] + [f"entropy_bits_{i}" for i in levels]
            + ["first_level_gini", "collision_rate_before", "cf_pair_code_similarity", *LOSS_COLUMNS])


@torch.no_grad()
def curve_row(codes: torch.Tensor, codebook_size: int, epoch: int, record: Optional[dict],
              neighbours: Optional[torch.Tensor] = None) -> dict:
    """One row of the curve from nearest-code identifiers ``codes [V, L]`` (before re-assignment), the epoch's
    training ``record`` (its mean loss terms; None before training) and the items' CF-nearest ``neighbours [V]``
    (or None)."""
    codes = codes.cpu()
    row: dict = {"epoch": int(epoch)}
    for level in range(codes.shape[1]):
        row[f"codes_used_{level + 1}"] = int(torch.unique(codes[:, level]).numel())
    for level, bits in enumerate(entropy_bits(codes, codebook_size)):
        row[f"entropy_bits_{level + 1}"] = bits
    row["first_level_gini"] = gini(torch.bincount(codes[:, 0], minlength=codebook_size))
    row["collision_rate_before"] = collision_rate(codes)
    row["cf_pair_code_similarity"] = (neighbour_code_similarity(codes, neighbours.cpu())
                                      if neighbours is not None else None)
    for column in LOSS_COLUMNS:
        row[column] = float(record[_RECORD_KEYS[column]]) if record is not None else None
    return row


def write_curve(path, rows: Sequence[dict], num_levels: int) -> Path:
    """Write ``rows`` as ``curve.csv`` (atomically; floats as Python's shortest round-trip repr)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=curve_columns(num_levels), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    text = buffer.getvalue()
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def read_curve(path) -> list[dict]:
    """The rows of a ``curve.csv``: ``epoch`` and ``codes_used_*`` as int, empty cells as None, the rest float."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no learning curve at {path}: train with curve_every > 0 (--curve-every N)")
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if value == "" or value is None:
                    row[key] = None
                elif key == "epoch" or key.startswith("codes_used_"):
                    row[key] = int(value)
                else:
                    row[key] = float(value)
            rows.append(row)
    return rows
