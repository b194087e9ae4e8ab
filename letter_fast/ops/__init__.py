"""Tensor ops with interchangeable backends (see :mod:`letter_fast.ops.backends`)."""

from letter_fast.ops.backends import BACKENDS, BackendUnavailable
from letter_fast.ops.contrastive import codebook_diversity_loss, contrastive_loss, in_batch_contrastive_loss
from letter_fast.ops.residual_quantize import residual_quantize, rq_code_embeddings, rq_decode

__all__ = [
    "BACKENDS", "BackendUnavailable", "codebook_diversity_loss", "contrastive_loss", "in_batch_contrastive_loss",
    "residual_quantize", "rq_code_embeddings", "rq_decode",
]
