"""The decoder loop TIGER needs for recommendation: trie-constrained beam search with shared per-user state.

Hugging Face ``generate(num_beams=K)`` treats each beam as an independent sequence: it copies the encoder output K
times per user (``expand`` + ``index_select``), recomputes cross-attention keys and values for every copy, and then
asks a Python ``prefix_allowed_tokens_fn`` for every beam at every step. For TIGER (L = 4 decoder steps, 20 beams)
that bookkeeping, not arithmetic, dominates.

:class:`TigerDecoder` drives the same ``T5ForConditionalGeneration`` weights step by step for
``letter_fast.genrec.constrained_beam_search`` (trie masking on tensors):

* **encoder once per user**, at batch width B (not B x beams);
* **cross-attention K/V once per user and never copied**: for layer i, ``K_i, V_i = enc @ W_k, enc @ W_v`` with shape
  ``[B, heads, S, d_kv]``. All beams of a user sit at the same decoding step, so their queries are stacked along
  the *query-length* axis: ``q [B, heads, beams, d_kv]`` attends to the user's single ``K_i`` in one batched matmul
  (scaled-dot-product attention with the encoder padding mask). No ``[B * beams, S, d]`` tensor is ever built,
  and a beam reorder never touches these tensors (beams only move within their own user's block of rows);
* **cached decoder self-attention**: keys/values of the decoded prefix, ``[B * beams, heads, t, d_kv]`` per layer,
  reordered through the search's ``parent`` index (``index_select``) and grown by one position per step;
* the relative position bias of the decoder (T5's bucketed bias, causal) computed once for the L + 1 positions.

The scores equal the model's: ``step_fn`` returns ``log_softmax`` over the whole vocabulary, restricted to the
current level's code tokens, exactly what ``generate`` accumulates before masking (tests compare beams and scores
with ``generate`` + a dict trie). The final EOS is not scored: after L codes EOS is the only allowed token and a
trained TIGER gives it probability ~1 (every training target ends there).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from letter_fast.genrec.tiger import PAD_ID, CodeVocabulary, TigerSequences


class TigerDecoder:
    """Step functions over a trained TIGER model (see the module docstring); one ``start`` per batch of users."""

    def __init__(self, model, vocab: CodeVocabulary):
        self.model = model
        self.vocab = vocab
        cfg = model.config
        if cfg.vocab_size != vocab.size:
            raise ValueError(f"model vocabulary has {cfg.vocab_size} tokens but the code vocabulary {vocab.size}")
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.inner = self.heads * self.d_kv
        scale = getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", True))
        self.output_scale = cfg.d_model ** -0.5 if scale else 1.0

    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Callable:
        """Encode one batch of users and return ``step_fn(prefix, parent) -> log_probs [rows, num_codes]``."""
        model, vocab = self.model, self.vocab
        decoder = model.decoder
        blocks = decoder.block
        B = input_ids.shape[0]
        H, dk, inner = self.heads, self.d_kv, self.inner

        enc = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state   # [B, S, d]
        S = enc.shape[1]
        enc_mask = attention_mask.bool()[:, None, None, :]                                         # [B, 1, 1, S]
        layers = []
        for block in blocks:
            sa_layer, ca_layer, ff_layer = block.layer
            sa, ca, ff = sa_layer.SelfAttention, ca_layer.EncDecAttention, ff_layer.DenseReluDense
            kv = F.linear(enc, torch.cat([ca.k.weight, ca.v.weight]))                              # [B, S, 2 inner]
            cross_k, cross_v = kv.view(B, S, 2, H, dk).permute(2, 0, 3, 1, 4).unbind(0)             # [B, H, S, dk]
            layers.append(dict(
                norm_sa=sa_layer.layer_norm.weight, eps=sa_layer.layer_norm.variance_epsilon,
                w_qkv=torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]), w_sa_o=sa.o.weight,
                norm_ca=ca_layer.layer_norm.weight, w_ca_q=ca.q.weight, w_ca_o=ca.o.weight,
                cross_k=cross_k, cross_v=cross_v,
                norm_ff=ff_layer.layer_norm.weight, w_wi=ff.wi.weight, w_wo=ff.wo.weight))
        if not isinstance(blocks[0].layer[2].DenseReluDense.act, torch.nn.ReLU):
            raise ValueError("TigerDecoder implements the ReLU feed-forward of TIGER (feed_forward_proj='relu')")
        steps = vocab.num_levels
        # causal relative position bias of all decoder positions, [1, H, L, L]; row t = query position t
        pos_bias = blocks[0].layer[0].SelfAttention.compute_bias(steps, steps, device=enc.device)
        past: list[Optional[torch.Tensor]] = [None] * len(blocks)   # per layer [rows, 2, H, t, dk] (keys, values)
        embed = decoder.embed_tokens.weight
        lm_head = model.lm_head.weight
        final_norm, final_eps = decoder.final_layer_norm.weight, decoder.final_layer_norm.variance_epsilon
        d = embed.shape[1]
        offsets = [vocab.level_offset(t) for t in range(steps)]

        def rms_norm(x, weight, eps):   # T5LayerNorm: scale only, no mean, in float32 (as T5 with float32 weights)
            return F.rms_norm(x.float(), (d,), weight.float(), eps)

        @torch.no_grad()
        def step_fn(prefix: torch.Tensor, parent: Optional[torch.Tensor]) -> torch.Tensor:
            t = prefix.shape[1]
            if t >= steps:
                raise ValueError(f"TIGER step_fn called for level {t} but identifiers have {steps} levels")
            if t == 0:
                tokens = torch.full((B,), PAD_ID, dtype=torch.long, device=enc.device)  # decoder start token
            else:
                tokens = prefix[:, -1].to(enc.device) + offsets[t - 1]
                parent = parent.to(enc.device)
                for i in range(len(layers)):                     # follow each beam to the row it extends
                    past[i] = past[i].index_select(0, parent)
            rows = tokens.shape[0]
            if rows % B:
                raise ValueError(f"step_fn got {rows} rows, not a multiple of the {B} users of this batch")
            group = rows // B      # beams per user; rows are user-major (row = user * group + beam)
            x = F.embedding(tokens, embed)                                                        # [rows, d]
            bias = pos_bias[:, :, t:t + 1, :t + 1]
            for i, w in enumerate(layers):
                # causal self-attention over the cached prefix (one new query per row)
                qkv = F.linear(rms_norm(x, w["norm_sa"], w["eps"]), w["w_qkv"]).view(rows, 3, H, 1, dk)
                kv = qkv[:, 1:]                                                                    # [rows, 2, H, 1, dk]
                kv = torch.cat([past[i], kv], dim=3) if t else kv.contiguous()
                past[i] = kv
                a = F.scaled_dot_product_attention(qkv[:, 0], kv[:, 0], kv[:, 1], attn_mask=bias.to(kv.dtype),
                                                   scale=1.0)                                     # [rows, H, 1, dk]
                x = x + F.linear(a.reshape(rows, inner), w["w_sa_o"])
                # cross-attention: the user's beams are the query axis of one attention over the user's K/V
                q = F.linear(rms_norm(x, w["norm_ca"], w["eps"]), w["w_ca_q"]).view(B, group, H, dk).transpose(1, 2)
                a = F.scaled_dot_product_attention(q, w["cross_k"].to(q.dtype), w["cross_v"].to(q.dtype),
                                                   attn_mask=enc_mask, scale=1.0)                 # [B, H, g, dk]
                x = x + F.linear(a.transpose(1, 2).reshape(rows, inner), w["w_ca_o"])
                # ReLU feed-forward
                h = F.relu(F.linear(rms_norm(x, w["norm_ff"], w["eps"]), w["w_wi"]))
                x = x + F.linear(h, w["w_wo"])
            x = rms_norm(x, final_norm, final_eps) * self.output_scale
            log_probs = torch.log_softmax(F.linear(x, lm_head).float(), dim=-1)
            return log_probs[:, offsets[t]:offsets[t] + vocab.num_codes]

        return step_fn


@torch.no_grad()
def recommend(model, vocab: CodeVocabulary, index, sequences: TigerSequences, *, num_beams: int = 20,
              num_return: Optional[int] = None, batch_size: int = 256, device=None, autocast_dtype=None,
              progress: bool = False, return_identifiers: bool = False, backend: Optional[str] = None):
    """Top items for every sample of ``sequences``: ``(item_ids [S, num_return], scores [S, num_return])``.

    With ``return_identifiers`` also the identifier ids of ``index`` ``[S, num_return]`` (with collisions an
    identifier stands for a group of items; ``item_ids`` holds its first item).

    Users are processed in order of input length (so a batch pads little), ``batch_size`` at a time, each batch
    through ``constrained_beam_search`` with :class:`TigerDecoder` as ``step_fn``; rows come back in input order.
    ``autocast_dtype`` (e.g. ``torch.bfloat16`` on a GPU) runs the model under autocast; scores stay float32.
    ``backend`` picks the trie step kernel of the search (default: the fastest that runs here).
    """
    from letter_fast.genrec import constrained_beam_search

    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    num_return = num_return or num_beams
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    decoder = TigerDecoder(model, vocab)
    S = len(sequences)
    order = torch.argsort(sequences.lengths.cpu(), stable=True)
    item_ids = torch.full((S, num_return), -1, dtype=torch.long)
    scores = torch.full((S, num_return), float("-inf"))
    identifiers = torch.full((S, num_return), -1, dtype=torch.long)
    batches = range(0, S, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="recommend", unit="batch", leave=False)
    try:
        for start in batches:
            rows = order[start:start + batch_size]
            ids, mask, _ = sequences.batch(rows, device=device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                step_fn = decoder.start(ids, mask)
                items, item_scores, idents = constrained_beam_search(step_fn, ids.shape[0], num_beams, index,
                                                                     num_return=num_return, return_identifiers=True,
                                                                     backend=backend)
            item_ids[rows] = items.cpu()
            identifiers[rows] = idents.cpu()
            scores[rows] = item_scores.float().cpu()
    finally:
        model.train(was_training)
    if return_identifiers:
        return item_ids, scores, identifiers
    return item_ids, scores


# ----------------------------------------------------------------------------------------- the usual baseline


def dict_trie_prefix_fn(codes: torch.Tensor, vocab: CodeVocabulary) -> Callable:
    """The customary ``prefix_allowed_tokens_fn`` for ``generate``: a Python dict from decoded token prefixes to
    allowed next tokens (EOS after a full identifier). The baseline the fast path is measured against."""
    from letter_fast.genrec.tiger import EOS_ID

    tokens = vocab.encode(codes.cpu()).tolist()
    trie: dict[tuple, set] = {}
    for row in tokens:
        for t in range(len(row)):
            trie.setdefault(tuple(row[:t]), set()).add(row[t])
        trie.setdefault(tuple(row), set()).add(EOS_ID)
    allowed = {k: sorted(v) for k, v in trie.items()}

    def prefix_allowed_tokens_fn(batch_id: int, input_ids: torch.Tensor) -> list:
        return allowed.get(tuple(input_ids[1:].tolist()), [])   # input_ids[0] is the decoder start token

    return prefix_allowed_tokens_fn


@torch.no_grad()
def hf_generate_recommend(model, vocab: CodeVocabulary, codes: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor, num_beams: int = 20, num_return: Optional[int] = None,
                          prefix_fn: Optional[Callable] = None, with_eos: bool = True):
    """Recommend with Hugging Face ``generate`` + a dict trie (the baseline): ``(codes [B, R, L], scores [B, R])``.

    ``with_eos`` decodes the closing EOS as the reference TIGER code does (L + 1 tokens); without it the search
    stops after the L codes and ``scores`` are summed log-probabilities of the codes (``length_penalty=0``), the
    quantity :func:`recommend` ranks by.
    """
    if num_beams < 2:
        raise ValueError("hf_generate_recommend needs num_beams >= 2 (generate with one beam is greedy search)")
    num_return = num_return or num_beams
    prefix_fn = prefix_fn or dict_trie_prefix_fn(codes, vocab)
    L = vocab.num_levels
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                         num_return_sequences=num_return, max_new_tokens=L + 1 if with_eos else L,
                         min_new_tokens=L if with_eos else None, prefix_allowed_tokens_fn=prefix_fn,
                         length_penalty=0.0, early_stopping=True, do_sample=False,
                         output_scores=True, return_dict_in_generate=True)
    seq = out.sequences[:, 1:L + 1]
    return vocab.decode(seq).reshape(input_ids.shape[0], num_return, L), out.sequences_scores.reshape(-1, num_return)
