"""The decoder loop TIGER needs for recommendation: trie-constrained beam search with shared per-user state.

Hugging Face ``generate(num_beams=K)`` treats each beam as an independent sequence: it copies the encoder output K
times per user (``expand`` + ``index_select``), recomputes cross-attention keys and values for every copy, and then
asks a Python ``prefix_allowed_tokens_fn`` for every beam at every step. For TIGER (L = 4 decoder steps, 20 beams)
that bookkeeping, not arithmetic, dominates.

:class:`TigerDecoder` drives the same ``T5ForConditionalGeneration`` weights step by step for
``letter_fast.genrec.constrained_beam_search`` (trie masking on tensors):

* **encoder once per user**, at batch width B (not B x beams), in chunks of similar-length users so each chunk pads
  only to its own longest history (T5 encoder re-implemented on the model's weights: fused q/k/v projection,
  ``rms_norm``, scaled-dot-product attention with the relative position bias);
* **cross-attention K/V once per user and never copied**: for layer i, ``K_i, V_i = enc @ W_k, enc @ W_v`` with shape
  ``[B, heads, S, d_kv]``. All beams of a user sit at the same decoding step, so their queries are stacked along
  the *query-length* axis: ``q [B, heads, beams, d_kv]`` attends to the user's single ``K_i`` in one batched matmul
  (scaled-dot-product attention with the encoder padding mask). No ``[B * beams, S, d]`` tensor is ever built,
  and a beam reorder never touches these tensors (beams only move within their own user's block of rows);
* **decoder self-attention without a key/value cache copy**: each step keeps its ``[rows, 3, heads, d_kv]`` q/k/v
  projections where ``F.linear`` wrote them, and each beam carries the row of its ancestor at every earlier step
  (``anc``, composed from the search's ``parent``). :func:`letter_fast.ops.beam_attention` reads the ancestors'
  keys and values in place (a fused CPU kernel; gather + scaled-dot-product attention elsewhere) instead of
  re-gathering a per-beam cache through ``parent`` at every step (``t * rows * 2 * heads * d_kv`` values copied
  per layer and step: ~10x slower at 128 users x 20 beams);
* the relative position bias of the decoder (T5's bucketed bias, causal) computed once for the L positions;
* optional bfloat16 matmuls (``dtype``) with a float32 residual stream, norms and log-softmax.

The scores equal the model's: ``step_fn`` returns ``log_softmax`` over the whole vocabulary, restricted to the
current level's code tokens, exactly what ``generate`` accumulates before masking (tests compare beams and scores
with ``generate`` + a dict trie). The final EOS is not scored: after L codes EOS is the only allowed token and a
trained TIGER gives it probability ~1 (every training target ends there).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from letter_fast.genrec.tiger import PAD_ID, CodeVocabulary, TigerSequences
from letter_fast.ops.beam_attention import beam_attention, extend_ancestors


class TigerDecoder:
    """Step functions over a trained TIGER model (see the module docstring); one ``start`` per batch of users."""

    def __init__(self, model, vocab: CodeVocabulary, dtype: Optional[torch.dtype] = None, chunk_users: int = 32):
        """``dtype``: the matmul precision (default: the model's). ``torch.bfloat16`` runs every matmul and attention
        in bfloat16 (tensor cores on GPUs, AMX on recent Xeons) while the residual stream, the norms and the
        log-softmax stay float32, as under autocast. ``chunk_users``: users per encoder / cross-attention chunk.

        The weights are read (and cast) once here: build a new decoder after further training.
        """
        self.model = model
        self.vocab = vocab
        self.dtype = dt = dtype or next(model.parameters()).dtype
        self.chunk_users = int(chunk_users)
        cfg = model.config
        if cfg.vocab_size != vocab.size:
            raise ValueError(f"model vocabulary has {cfg.vocab_size} tokens but the code vocabulary {vocab.size}")
        if getattr(cfg, "feed_forward_proj", "relu") != "relu":
            raise ValueError("TigerDecoder implements TIGER's ReLU feed-forward (feed_forward_proj='relu'), got "
                             f"{cfg.feed_forward_proj!r}")
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.inner = self.heads * self.d_kv
        scale = getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", True))
        self.output_scale = cfg.d_model ** -0.5 if scale else 1.0
        self.d = cfg.d_model

        def ffn(layer):
            return dict(norm_ff=layer.layer_norm.weight, w_wi=layer.DenseReluDense.wi.weight.to(dt),
                        w_wo=layer.DenseReluDense.wo.weight.to(dt))

        self.enc_layers = []
        for block in model.encoder.block:
            sa_layer, ff_layer = block.layer
            sa = sa_layer.SelfAttention
            self.enc_layers.append(dict(
                norm_sa=sa_layer.layer_norm.weight, eps=sa_layer.layer_norm.variance_epsilon,
                w_qkv=torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]).to(dt), w_o=sa.o.weight.to(dt),
                **ffn(ff_layer)))
        self.dec_layers = []
        for block in model.decoder.block:
            sa_layer, ca_layer, ff_layer = block.layer
            sa, ca = sa_layer.SelfAttention, ca_layer.EncDecAttention
            self.dec_layers.append(dict(
                norm_sa=sa_layer.layer_norm.weight, eps=sa_layer.layer_norm.variance_epsilon,
                w_qkv=torch.cat([sa.q.weight, sa.k.weight, sa.v.weight]).to(dt), w_sa_o=sa.o.weight.to(dt),
                norm_ca=ca_layer.layer_norm.weight, w_ca_q=ca.q.weight.to(dt), w_ca_o=ca.o.weight.to(dt),
                w_ca_kv=torch.cat([ca.k.weight, ca.v.weight]).to(dt), **ffn(ff_layer)))
        self.enc_bias = model.encoder.block[0].layer[0].SelfAttention       # relative position bias (bidirectional)
        self.dec_bias = model.decoder.block[0].layer[0].SelfAttention       # relative position bias (causal)
        self.enc_final = model.encoder.final_layer_norm
        self.dec_final = model.decoder.final_layer_norm
        self.enc_embed = model.encoder.embed_tokens.weight
        self.dec_embed = model.decoder.embed_tokens.weight
        self.lm_head = model.lm_head.weight.to(dt)
        self._storage: dict[str, torch.Tensor] = {}     # reusable matmul outputs, see _linear

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A ``shape`` view of the decoder's reusable storage ``name`` (grown when too small). Its content lives
        until the next request for the same name."""
        size = math.prod(shape)
        buf = self._storage.get(name)
        if buf is None or buf.numel() < size or buf.device != device or buf.dtype != dtype:
            buf = self._storage[name] = torch.empty(size, dtype=dtype, device=device)
        return buf[:size].view(shape)

    def _linear(self, name: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x [n, in] @ weight[out, in]^T`` written into the reusable buffer ``name`` (``[n, out]``).

        Decoding allocates the same activation shapes at every step of every batch. As fresh tensors, each 10 MB
        matmul output is fresh memory from the OS, and faulting it in made the matmuls ~2x slower than the same
        product into a buffer that is reused (measured at [2560, 128] x [128, 1152] on this CPU: 5.6 vs 2.7 ms).
        """
        out = self._buffer(name, (x.shape[0], weight.shape[0]), self.dtype, x.device)
        return torch.mm(x, weight.t(), out=out)

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """T5LayerNorm (scale only, no mean subtraction) in float32; returned in the matmul dtype."""
        return F.rms_norm(x, (self.d,), weight.float(), eps).to(self.dtype)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The T5 encoder on one chunk of users (right-padded): ``[b, S, d]`` in the matmul dtype."""
        b, S = input_ids.shape
        H, dk, inner, dt = self.heads, self.d_kv, self.inner, self.dtype
        x = F.embedding(input_ids.reshape(-1), self.enc_embed).float()                           # [b * S, d]
        bias = self.enc_bias.compute_bias(S, S, device=input_ids.device).to(dt)                  # [1, H, S, S]
        keep = attention_mask.bool()[:, None, None, :]
        attn_mask = bias.masked_fill(~keep, float("-inf"))                                       # [b, H, S, S]
        linear = self._linear
        for w in self.enc_layers:
            q, k, v = linear("enc.qkv", self._norm(x, w["norm_sa"], w["eps"]), w["w_qkv"]).view(b, S, 3, H, dk) \
                .permute(2, 0, 3, 1, 4).unbind(0)                                                # [b, H, S, dk]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=1.0)
            x.add_(linear("enc.o", a.transpose(1, 2).reshape(b * S, inner), w["w_o"]))
            h = linear("enc.h", self._norm(x, w["norm_ff"], w["eps"]), w["w_wi"]).relu_()
            x.add_(linear("enc.o", h, w["w_wo"]))
        return self._norm(x, self.enc_final.weight, self.enc_final.variance_epsilon).view(b, S, self.d)

    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Callable:
        """Encode one batch of users and return ``step_fn(prefix, parent) -> log_probs [rows, num_codes]``.

        ``input_ids``/``attention_mask`` ``[B, S]`` right-padded (as :class:`TigerSequences` builds them).
        Users are encoded in chunks of similar length (each padded only to its own longest history), and each
        chunk keeps its own cross-attention keys/values.
        """
        vocab = self.vocab
        B = input_ids.shape[0]
        H, dk, inner, dt = self.heads, self.d_kv, self.inner, self.dtype
        device = input_ids.device
        lengths = attention_mask.sum(1)
        right_padded = bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())
        order = torch.argsort(lengths, stable=True)
        chunks = []
        for ci, users in enumerate(order.split(max(1, self.chunk_users))):
            S = int(lengths[users].max()) if right_padded else input_ids.shape[1]
            first = int(users[0])
            contiguous = bool((users == torch.arange(first, first + users.numel(), device=device)).all())
            enc = self._encode(input_ids[users, :S], attention_mask[users, :S])                  # [b, S, d]
            kv = [self._linear(f"kv.{ci}.{i}", enc.view(-1, self.d), w["w_ca_kv"])
                  .view(users.numel(), S, 2, H, dk).permute(2, 0, 3, 1, 4)
                  for i, w in enumerate(self.dec_layers)]                                        # [2, b, H, S, dk]
            chunks.append(dict(users=users, first=first if contiguous else None, kv=kv,
                               mask=attention_mask[users, :S].bool()[:, None, None, :]))
        ordered = all(c["first"] is not None for c in chunks) and bool((order == torch.arange(B, device=device)).all())
        steps = vocab.num_levels
        # causal relative position bias of all decoder positions, [1, H, L, L]; row t = query position t
        pos_bias = self.dec_bias.compute_bias(steps, steps, device=device).to(dt)
        layers = self.dec_layers
        # self-attention state: each layer's q/k/v projections of every step, and each row's ancestor row at every
        # earlier step (the beams' histories are followed by index, never gathered into a cache)
        state: dict = {}
        offsets = [vocab.level_offset(t) for t in range(steps)]
        norm, linear = self._norm, self._linear

        def cross_attention(q: torch.Tensor, i: int, group: int) -> torch.Tensor:
            """``q [rows, inner]`` (rows user-major, ``group`` per user) attends to its own user's encoder states."""
            outs, out = [], (None if ordered else self._buffer("ca", q.shape, q.dtype, q.device))
            beams = torch.arange(group, device=device)
            for c in chunks:
                b = c["users"].numel()
                if ordered:
                    qc = q[c["first"] * group:(c["first"] + b) * group]
                else:
                    rows_c = (c["users"][:, None] * group + beams).reshape(-1)
                    qc = q.index_select(0, rows_c)
                qc = qc.view(b, group, H, dk).transpose(1, 2)                                   # [b, H, g, dk]
                k, v = c["kv"][i]
                a = F.scaled_dot_product_attention(qc, k, v, attn_mask=c["mask"], scale=1.0)     # [b, H, g, dk]
                a = a.transpose(1, 2).reshape(b * group, inner)
                if ordered:
                    outs.append(a)
                else:
                    out.index_copy_(0, rows_c, a)
            return torch.cat(outs, out=self._buffer("ca", q.shape, q.dtype, q.device)) if ordered else out

        @torch.no_grad()
        def step_fn(prefix: torch.Tensor, parent: Optional[torch.Tensor]) -> torch.Tensor:
            t = prefix.shape[1]
            if t >= steps:
                raise ValueError(f"TIGER step_fn called for level {t} but identifiers have {steps} levels")
            if t == 0:
                tokens = torch.full((B,), PAD_ID, dtype=torch.long, device=device)   # the decoder start token
            else:
                tokens = prefix[:, -1].to(device) + offsets[t - 1]
                parent = parent.to(device)
            rows = tokens.shape[0]
            if rows % B:
                raise ValueError(f"step_fn got {rows} rows, not a multiple of the {B} users of this batch")
            group = rows // B      # beams per user; rows are user-major (row = user * group + beam)
            x = F.embedding(tokens, self.dec_embed).float()                   # [rows, d], residual stream in fp32
            if t == 0:
                state["anc"] = torch.empty(0, rows, dtype=torch.long, device=device)
                state["qkv"] = [[] for _ in layers]
            else:                                                # each beam's ancestor row at every earlier step
                state["anc"] = extend_ancestors(state["anc"], parent)
            bias = pos_bias[0, :, t, :t + 1]                                                    # [H, t + 1]
            for i, w in enumerate(layers):
                # causal self-attention: the new query against the row's ancestors' keys/values, read in place
                # (each step's projections live in their own buffer until the batch ends: later steps read them)
                qkv = linear(f"qkv.{i}.{t}", norm(x, w["norm_sa"], w["eps"]), w["w_qkv"]).view(rows, 3, H, dk)
                history = state["qkv"][i]
                history.append(qkv)
                a = beam_attention(history, state["anc"], bias)                                  # [rows, inner]
                x.add_(linear("o", a, w["w_sa_o"]))
                # cross-attention: a user's beams are the query axis of one attention over that user's K/V
                q = linear("q", norm(x, w["norm_ca"], w["eps"]), w["w_ca_q"])
                x.add_(linear("o", cross_attention(q, i, group), w["w_ca_o"]))
                # ReLU feed-forward
                h = linear("h", norm(x, w["norm_ff"], w["eps"]), w["w_wi"]).relu_()
                x.add_(linear("o", h, w["w_wo"]))
            x = norm(x, self.dec_final.weight, self.dec_final.variance_epsilon) * self.output_scale
            # log-softmax over the whole vocabulary, materialized only for this level's codes
            logits = linear("logits", x, self.lm_head).float()
            return logits[:, offsets[t]:offsets[t] + vocab.num_codes] - torch.logsumexp(logits, dim=-1, keepdim=True)

        return step_fn


@torch.no_grad()
def recommend(model, vocab: CodeVocabulary, index, sequences: TigerSequences, *, num_beams: int = 20,
              num_return: Optional[int] = None, batch_size: int = 256, device=None, autocast_dtype=None,
              progress: bool = False, return_identifiers: bool = False, backend: Optional[str] = None,
              decoder: Optional[TigerDecoder] = None):
    """Top items for every sample of ``sequences``: ``(item_ids [S, num_return], scores [S, num_return])``.

    With ``return_identifiers`` also the identifier ids of ``index`` ``[S, num_return]`` (with collisions an
    identifier stands for a group of items; ``item_ids`` holds its first item).

    Users are processed in order of input length (so a batch pads little), ``batch_size`` at a time, each batch
    through ``constrained_beam_search`` with :class:`TigerDecoder` as ``step_fn``; rows come back in input order.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the matmuls in that precision (see :class:`TigerDecoder`);
    scores stay float32.
    ``backend`` picks the trie step kernel of the search (default: the fastest that runs here).
    ``decoder``: a :class:`TigerDecoder` of this model to reuse across calls (a serving loop keeps one: it reads the
    weights once and keeps its work buffers); default: a new one per call, reused across this call's batches.
    """
    from letter_fast.genrec import constrained_beam_search

    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    num_return = num_return or num_beams
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    if decoder is None:
        decoder = TigerDecoder(model, vocab, dtype=autocast_dtype)
    elif decoder.model is not model or decoder.dtype != (autocast_dtype or next(model.parameters()).dtype):
        raise ValueError("recommend: decoder was built for another model or matmul dtype")
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
                          prefix_fn: Optional[Callable] = None, with_eos: bool = True, logits_processor=None):
    """Recommend with Hugging Face ``generate`` + a dict trie (the baseline): ``(codes [B, R, L], scores [B, R])``.

    ``with_eos`` decodes the closing EOS as the reference TIGER code does (L + 1 tokens); without it the search
    stops after the L codes and ``scores`` are summed log-probabilities of the codes (``length_penalty=0``), the
    quantity :func:`recommend` ranks by. ``logits_processor`` (e.g. ``letter_fast.genrec.TrieLogitsProcessor``)
    replaces the dict trie.
    """
    if num_beams < 2:
        raise ValueError("hf_generate_recommend needs num_beams >= 2 (generate with one beam is greedy search)")
    num_return = num_return or num_beams
    if logits_processor is None:
        prefix_fn = prefix_fn or dict_trie_prefix_fn(codes, vocab)
        constraint = dict(prefix_allowed_tokens_fn=prefix_fn)
    else:
        constraint = dict(logits_processor=[logits_processor])
    L = vocab.num_levels
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                         num_return_sequences=num_return, max_new_tokens=L + 1 if with_eos else L,
                         min_new_tokens=L if with_eos else None, **constraint,
                         length_penalty=0.0, early_stopping=True, do_sample=False,
                         output_scores=True, return_dict_in_generate=True)
    seq = out.sequences[:, 1:L + 1]
    return vocab.decode(seq).reshape(input_ids.shape[0], num_return, L), out.sequences_scores.reshape(-1, num_return)
