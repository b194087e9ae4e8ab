"""TIGER: a small T5 encoder-decoder that reads a user's history as semantic-ID tokens and writes the next item's ID.

Rajput et al., "Recommender Systems with Generative Retrieval" (NeurIPS 2023), as trained in the LETTER paper
(Wang et al., CIKM 2024; docs/method.md, section 3):

* vocabulary: no text tokenizer. One token per (level, code) plus two specials::

      PAD = 0 (also the decoder start token), EOS = 1, token(l, c) = 2 + l * N + c

  so a catalog with L levels of N codes has ``2 + L * N`` tokens (1,026 for 4 x 256).
* input  = the history's identifiers concatenated, oldest first, no separator, then EOS;
  target = the next item's L code tokens, then EOS.
* model: a randomly initialized ``transformers.T5ForConditionalGeneration``, by default 4 encoder + 4 decoder
  layers, d_model 128, d_ff 1024, 6 heads x d_kv 64, dropout 0.1, ReLU feed-forward.
* ranking-guided generation loss (LETTER Eq. 6):
  ``L_rank = -sum_t log softmax(z_t / tau)[y_t]``. tau < 1 sharpens the softmax, so negatives the model already
  scores close to the target (hard negatives) carry more of the gradient; tau = 1 is the usual cross-entropy.

Sequences are built once as tensors (:class:`TigerSequences`): training slices rows out of them and never does per-batch
string or list work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from letter_fast.config import setting
from letter_fast.ops import checks

PAD_ID = 0
EOS_ID = 1
NUM_SPECIAL_TOKENS = 2
IGNORE_INDEX = -100


@dataclass(frozen=True)
class CodeVocabulary:
    """Token ids of a semantic-ID catalog: ``token(l, c) = 2 + l * num_codes + c`` (PAD = 0, EOS = 1)."""

    num_levels: int
    num_codes: int

    def __post_init__(self):
        if self.num_levels < 1 or self.num_codes < 1:
            raise ValueError(f"CodeVocabulary needs num_levels >= 1 and num_codes >= 1, got "
                             f"{self.num_levels} and {self.num_codes}")

    @property
    def size(self) -> int:
        return NUM_SPECIAL_TOKENS + self.num_levels * self.num_codes

    def level_offset(self, level: int) -> int:
        """Token id of code 0 at ``level``; the level's tokens are ``[offset, offset + num_codes)``."""
        return NUM_SPECIAL_TOKENS + level * self.num_codes

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [..., L]`` (code per level) -> token ids of the same shape."""
        levels = torch.arange(self.num_levels, device=codes.device)
        return codes.long() + NUM_SPECIAL_TOKENS + levels * self.num_codes

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[..., L]`` of one identifier -> codes (inverse of :meth:`encode`)."""
        levels = torch.arange(self.num_levels, device=tokens.device)
        return tokens.long() - NUM_SPECIAL_TOKENS - levels * self.num_codes

    @classmethod
    def for_codes(cls, codes: torch.Tensor, num_codes: Optional[int] = None) -> CodeVocabulary:
        """The vocabulary of an item-code table ``[V, L]`` (``num_codes`` defaults to the largest code + 1)."""
        check_item_codes(codes, num_codes)
        n = int(num_codes) if num_codes is not None else int(codes.max()) + 1
        return cls(num_levels=int(codes.shape[1]), num_codes=n)


def check_item_codes(codes: torch.Tensor, num_codes: Optional[int] = None) -> None:
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype.is_floating_point:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"item codes must be an integer tensor [num_items, num_levels], got {shape}")
    if codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"item codes are empty (shape {tuple(codes.shape)}): give at least one item and one level")
    if int(codes.min()) < 0:
        raise ValueError(f"item codes must be >= 0, found {int(codes.min())}")
    if num_codes is not None and int(codes.max()) >= num_codes:
        bad = int((codes >= num_codes).nonzero()[0, 0])
        raise ValueError(f"item {bad} has code {int(codes[bad].max())} >= num_codes={num_codes}")


@dataclass
class TigerModelConfig:
    """Model: the size of the T5 (defaults: the TIGER/LETTER setting)."""

    num_layers: int = setting(4, "encoder layers")
    num_decoder_layers: int = setting(4, "decoder layers")
    d_model: int = setting(128, "model width")
    d_ff: int = setting(1024, "feed-forward width (ReLU)")
    num_heads: int = setting(6, "attention heads")
    d_kv: int = setting(64, "width of one attention head")
    dropout: float = setting(0.1, "dropout rate")
    relative_attention_num_buckets: int = setting(32, "T5 relative-position buckets")
    relative_attention_max_distance: int = setting(128, "T5 relative positions beyond this distance share one "
                                                             "bucket")


def build_tiger(vocab: CodeVocabulary, config: Optional[TigerModelConfig] = None, seed: Optional[int] = None):
    """A randomly initialized ``T5ForConditionalGeneration`` over ``vocab`` (PAD = decoder start, EOS = 1)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = config or TigerModelConfig()
    t5_config = T5Config(
        vocab_size=vocab.size, d_model=config.d_model, d_ff=config.d_ff, d_kv=config.d_kv,
        num_layers=config.num_layers, num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
        dropout_rate=config.dropout, feed_forward_proj="relu",
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
    )
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return T5ForConditionalGeneration(t5_config)
    return T5ForConditionalGeneration(t5_config)


# --------------------------------------------------------------------------------------------------- sequences


@dataclass
class TigerSequences:
    """Model inputs for a list of samples, built once.

    ``input_ids [S, max_len]``: history tokens + EOS, right-padded with PAD; ``lengths [S]``: real lengths
    (>= 1: a sample with an empty history is just EOS); ``labels [S, L + 1]``: target tokens + EOS;
    ``targets [S]``: the target item ids (for ranking metrics).
    """

    input_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batch(self, index: torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``index``, trimmed to the longest of them: ``(input_ids, attention_mask, labels)``."""
        index = index.to(self.input_ids.device)
        width = int(self.lengths[index].max()) if index.numel() else 1
        ids = self.input_ids[index, :width]
        mask = torch.arange(width, device=ids.device) < self.lengths[index, None]
        labels = self.labels[index]
        if device is not None:
            ids, mask, labels = ids.to(device, non_blocking=True), mask.to(device), labels.to(device)
        return ids, mask.long(), labels

    def to(self, device) -> TigerSequences:
        return TigerSequences(*(t.to(device) for t in (self.input_ids, self.lengths, self.labels, self.targets)))

    def subset(self, index: torch.Tensor) -> TigerSequences:
        index = index.to(self.input_ids.device)
        width = max(int(self.lengths[index].max()) if index.numel() else 1, 1)
        return TigerSequences(self.input_ids[index, :width], self.lengths[index], self.labels[index],
                              self.targets[index])


def build_sequences(item_codes: torch.Tensor, history: torch.Tensor, target: torch.Tensor,
                    vocab: Optional[CodeVocabulary] = None, max_history: Optional[int] = None) -> TigerSequences:
    """Tokenize samples into :class:`TigerSequences`, vectorized over all samples at once.

    ``history [S, H]``: item ids in time order, padded with any negative id on either side (the layout of
    ``letter_fast.data.SequenceSamples``); ``target [S]``: the next item. ``max_history`` keeps only the last items.
    """
    vocab = vocab or CodeVocabulary.for_codes(item_codes)
    V, L = item_codes.shape
    if L != vocab.num_levels:
        raise ValueError(f"item codes have {L} levels but the vocabulary has {vocab.num_levels}")
    history, target = torch.as_tensor(history).long().cpu(), torch.as_tensor(target).long().cpu()
    if history.dim() != 2 or target.dim() != 1 or history.shape[0] != target.shape[0]:
        raise ValueError(f"history must be [S, H] and target [S], got {tuple(history.shape)} and {tuple(target.shape)}")
    S = target.shape[0]
    valid = history >= 0
    for name, ids in (("history", history[valid]), ("target", target)):
        if not checks.index_range(ids, V):
            bad = int(ids[(ids < 0) | (ids >= V)][0])
            raise ValueError(f"{name} item id {bad} is outside the {V} items of the index")
    # move each row's items to the front, keeping their order (stable sort of "is padding")
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    history, valid = history.gather(1, order), valid.gather(1, order)
    hist_len = valid.sum(1)
    if max_history is not None and history.shape[1] > 0:
        drop = (hist_len - max_history).clamp(min=0)                  # oldest items beyond max_history
        cols = (torch.arange(history.shape[1])[None, :] + drop[:, None]).clamp(max=history.shape[1] - 1)
        history = history.gather(1, cols)
        hist_len = hist_len - drop
        history = history[:, :max_history]
    H = int(hist_len.max()) if S else 0
    history = history[:, :H]
    keep = torch.arange(H)[None, :] < hist_len[:, None]
    item_tokens = vocab.encode(item_codes.cpu())                                   # [V, L]
    tokens = item_tokens[history.clamp(min=0)]                                      # [S, H, L]
    tokens[~keep] = PAD_ID
    input_ids = torch.full((S, H * L + 1), PAD_ID, dtype=torch.long)
    input_ids[:, : H * L] = tokens.reshape(S, H * L)
    lengths = hist_len * L + 1
    input_ids[torch.arange(S), lengths - 1] = EOS_ID
    labels = torch.cat([item_tokens[target], torch.full((S, 1), EOS_ID, dtype=torch.long)], dim=1)
    return TigerSequences(input_ids, lengths, labels, target)


def sequences_from_samples(item_codes: torch.Tensor, samples, vocab: Optional[CodeVocabulary] = None,
                           max_history: Optional[int] = None) -> TigerSequences:
    """:func:`build_sequences` on a ``letter_fast.data.SequenceSamples`` (``.history``, ``.target``)."""
    return build_sequences(item_codes, samples.history, samples.target, vocab, max_history)


# --------------------------------------------------------------------------------------------------- the loss


def ranking_guided_loss(logits: torch.Tensor, labels: torch.Tensor, tau: float = 1.0,
                        ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """LETTER's ranking-guided generation loss: mean over target tokens of ``-log softmax(logits / tau)[label]``.

    ``logits [B, T, vocab]``, ``labels [B, T]`` (``ignore_index`` skips a position). With ``tau = 1`` this is the
    plain token cross-entropy; a temperature below 1 weighs hard negatives (high-scoring wrong tokens) more.
    Computed in float32 whatever the logits' dtype.
    """
    if tau <= 0:
        raise ValueError(f"ranking loss temperature tau must be > 0, got {tau}")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    z = logits.float()
    if tau != 1.0:
        z = z / tau
    return F.cross_entropy(z.reshape(-1, z.shape[-1]), labels.reshape(-1), ignore_index=ignore_index)


def tiger_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
               tau: float = 1.0) -> torch.Tensor:
    """Teacher-forced forward pass + :func:`ranking_guided_loss` (the decoder input is the labels shifted right)."""
    decoder_input_ids = torch.cat([torch.full_like(labels[:, :1], PAD_ID), labels[:, :-1]], dim=1)
    out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                use_cache=False)
    return ranking_guided_loss(out.logits, labels, tau)
