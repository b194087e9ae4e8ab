"""Generative recommendation: the item index (a trie of semantic identifiers) and constrained decoding.

:class:`ItemIndex` holds every item's code sequence as tensors; :func:`constrained_beam_search`
decodes only real items with the fused trie step (:func:`letter_fast.ops.trie_step`: reference,
C++, Triton, CUDA backends); :class:`TrieLogitsProcessor` (in :mod:`letter_fast.genrec.hf`, needs
transformers) does the same inside Hugging Face ``generate``.
"""

from letter_fast.genrec.beam_search import constrained_beam_search
from letter_fast.genrec.item_index import IdentifierCollisionError, ItemIndex

__all__ = ["ItemIndex", "IdentifierCollisionError", "constrained_beam_search", "TrieLogitsProcessor"]


def __getattr__(name):
    if name == "TrieLogitsProcessor":  # imports transformers only when asked for
        from letter_fast.genrec.hf import TrieLogitsProcessor

        return TrieLogitsProcessor
    raise AttributeError(name)
