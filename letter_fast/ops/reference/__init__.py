"""Plain PyTorch oracles: short, obviously correct, the fallback where nothing faster runs."""

from letter_fast.ops.reference.residual_quantize import residual_quantize_reference
from letter_fast.ops.reference.trie_step import trie_step_reference, trie_walk_reference

__all__ = ["residual_quantize_reference", "trie_step_reference", "trie_walk_reference"]
