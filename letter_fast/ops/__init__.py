"""Tensor ops with interchangeable backends, one module per op family.

``letter_fast.ops.<op>`` validates, holds the autograd rule and dispatches;
``letter_fast.ops.reference.<op>`` is the plain PyTorch oracle; ``letter_fast.ops.triton.<op>``
the Triton kernel where one exists; ``csrc/cpu/<op>*`` and ``csrc/cuda/<op>*`` the native ones.
:mod:`letter_fast.ops.backends` alone picks the backend of a call (``python -m letter_fast.info``
prints its table). Nothing here imports a model package.
"""

from letter_fast.ops.backends import BACKENDS, BackendUnavailable
from letter_fast.ops.beam_attention import beam_attention, extend_ancestors
from letter_fast.ops.contrastive_loss import codebook_diversity_loss, contrastive_loss, in_batch_contrastive_loss
from letter_fast.ops.residual_quantize import residual_code_embeddings, residual_dequantize, residual_quantize
from letter_fast.ops.sinkhorn_assign import sinkhorn_assign
from letter_fast.ops.trie import (
    TrieTensors,
    trie_allowed_tokens,
    trie_build,
    trie_constrain_logits,
    trie_step,
    trie_walk,
)

__all__ = [
    "BACKENDS", "BackendUnavailable", "TrieTensors", "beam_attention", "codebook_diversity_loss", "contrastive_loss",
    "extend_ancestors", "in_batch_contrastive_loss", "residual_code_embeddings", "residual_dequantize",
    "residual_quantize", "sinkhorn_assign", "trie_allowed_tokens", "trie_build", "trie_constrain_logits",
    "trie_step", "trie_walk",
]
