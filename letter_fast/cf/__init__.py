"""Collaborative-filtering models whose item embeddings feed LETTER's CF regularizer (SASRec)."""

from letter_fast.cf.sasrec import SASRec, SASRecConfig, SASRecResult, evaluate_ranking, save_result, train_sasrec

__all__ = ["SASRec", "SASRecConfig", "SASRecResult", "evaluate_ranking", "save_result", "train_sasrec"]
