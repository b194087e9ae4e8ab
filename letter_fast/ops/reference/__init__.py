"""Plain PyTorch oracles, one module per op family: short, obviously correct, the fallback where nothing faster runs."""

from letter_fast.ops.reference.beam_attention import beam_attention_reference
from letter_fast.ops.reference.contrastive_loss import contrastive_loss_reference
from letter_fast.ops.reference.residual_quantize import residual_quantize_reference
from letter_fast.ops.reference.sinkhorn_assign import sinkhorn_assign_reference
from letter_fast.ops.reference.trie import (
    trie_build_reference,
    trie_constrain_logits_reference,
    trie_step_reference,
    trie_walk_reference,
)

__all__ = [
    "beam_attention_reference", "contrastive_loss_reference", "residual_quantize_reference",
    "sinkhorn_assign_reference", "trie_build_reference", "trie_constrain_logits_reference", "trie_step_reference",
    "trie_walk_reference",
]
