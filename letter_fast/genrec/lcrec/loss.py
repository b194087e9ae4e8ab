"""LC-Rec training loss with the LM head applied only where a label is.

The ranking-guided generation loss of LETTER (Eq. 6) on a causal LM: with next-token targets
``y_t = labels[t + 1]``,

    L = (1 / |P|) * sum_{t in P} -log softmax(W h_t / tau)[y_t],      P = {t : labels[t + 1] != -100}

where ``h_t`` is the decoder body's last hidden state (after the final norm) and ``W`` the output embedding
(``lm_head``; tied or not). ``tau = 1`` is Hugging Face's own causal-LM loss (``model(..., labels=...).loss``).

A causal LM normally computes ``W h_t`` at every position: ``[B, T, vocab]`` logits (49k+ columns for SmolLM2,
150k for Qwen2), kept in float32 for the loss, for a loss that uses only the response positions. Here the
hidden states at ``P`` are gathered first, so the head, its float32 upcast and the softmax cost ``|P| x vocab``
instead of ``B x T x vocab`` (benchmarks/results/lcrec_loss.md).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from letter_fast.genrec.lcrec.collate import IGNORE_INDEX


def _unwrap(model):
    """The transformers ``*ForCausalLM`` inside a peft wrapper (LoRA layers and trainable-token wrappers stay in
    place, so calling its parts trains the adapters)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder_body(model):
    """The decoder body (``LlamaModel``, ``Qwen2Model``, ...) of a causal LM, peft-wrapped or not."""
    base = _unwrap(model)
    body = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    if body is None or body is base:
        body = base.get_decoder()
    return body


def labelled_logits(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], labels: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [P, vocab], targets [P])`` at the positions whose next-token label is not -100 (P of them)."""
    if labels.shape != input_ids.shape:
        raise ValueError(f"labels {tuple(labels.shape)} must match input_ids {tuple(input_ids.shape)}")
    base = _unwrap(model)
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(base.config, attr, None) not in (None, 1.0):
            raise NotImplementedError(f"{type(base).__name__} transforms its logits ({attr}); the labelled-position "
                                      "loss supports plain LM heads (Llama, Qwen2, ...)")
    hidden = decoder_body(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    h = hidden[:, :-1][keep]
    return base.get_output_embeddings()(h), targets[keep]


def lcrec_loss(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], labels: torch.Tensor,
               tau: float = 1.0, num_items_in_batch: Optional[int] = None) -> torch.Tensor:
    """Mean (or, given ``num_items_in_batch``, sum / that count, for gradient accumulation) of
    ``-log softmax(logits / tau)[target]`` over the labelled positions; computed in float32."""
    if tau <= 0:
        raise ValueError(f"ranking loss temperature tau must be > 0, got {tau}")
    logits, targets = labelled_logits(model, input_ids, attention_mask, labels)
    z = logits.float()
    if tau != 1.0:
        z = z / tau
    if num_items_in_batch is None:
        if targets.numel() == 0:  # no labelled position: a zero that keeps the graph (as HF's mean would be nan)
            return z.sum() * 0.0
        return F.cross_entropy(z, targets)
    return F.cross_entropy(z, targets, reduction="sum") / num_items_in_batch


__all__ = ["lcrec_loss", "labelled_logits", "decoder_body"]
