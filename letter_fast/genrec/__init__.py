"""Generative recommendation: trie index and constrained beam search, TIGER, evaluation."""
