"""Trie-constrained recommendation for LC-Rec: exact beam search over item identifiers with a decoder-only LLM.

LC-Rec (Zheng et al., 2024) adds ``L`` blocks of code tokens to a causal LLM's vocabulary (code ``n`` at level ``l``
is token ``offset[l] + n``) and recommends by beam search over the response: ``L`` code tokens that must spell a
real item's identifier. Hugging Face ``generate(num_beams=K)`` copies every user's prompt ``K`` times *before* the
prefill (``K`` times the prompt's compute), keeps a ``K``-times larger key/value cache and re-gathers all of it
through the beam order at every step, and asks a Python ``prefix_allowed_tokens_fn`` for every beam at every step.

:class:`LCRecDecoder` drives the same weights step by step for :func:`letter_fast.genrec.constrained_beam_search`:

* **prompt once per user**: the model's own forward (its attention implementation, its position handling) prefills
  a batch of ``B`` users, not ``B x K`` rows, and its last position gives level 0's log-probabilities;
* **prompt keys/values shared by a user's beams, never copied**: for decoding step ``t`` every beam of a user sits
  at the same position, so the beams' queries are stacked along the *query* axis of one batched attention against
  the user's single prompt cache ``[B, kv_heads, S, d]`` (GQA: the ``heads / kv_heads`` query heads of a key
  head are stacked there too). A beam reorder never touches the prompt cache (beams move within their user);
* **generated keys/values read through ancestors**: each step keeps the new token's rotated key and value where
  the projection wrote them; each beam carries its ancestor row at every earlier step (``anc``, composed from the
  search's ``parent`` by :func:`letter_fast.ops.extend_ancestors`) and gathers its ``t`` own keys (``t <= L``);
* **one softmax** over the prompt scores and the beam's own scores together, so the result is the model's
  attention exactly, not a merge of two normalized halves;
* the decode steps re-implement the Llama / Qwen2 / Mistral decoder layer on **fused weight copies** taken at
  construction: ``[W_q; W_k; W_v]`` and ``[W_gate; W_up]`` each one matmul (biases concatenated likewise), every
  product written into a buffer reused across layers and steps, ``F.rms_norm``, RoPE applied to q and k together
  with the model's own ``rotary_emb`` angles (whatever its ``rope_parameters``) computed once per step, every
  layer's ancestor keys/values gathered in one go per step; the output head at the step's rows only and one
  ``log_softmax`` over the full vocabulary. A PEFT (LoRA) model with unmerged adapters falls back to **calling the
  model's modules** (``input_layernorm``, ``q_proj`` ... ``lm_head``), so each ``lora.Linear`` adds its low-rank
  update itself; merging first (``merge_and_unload``) gets the fused path, equal up to float rounding. Optional
  bfloat16 matmuls (``dtype``) on the fused path.

Positions follow ``generate`` under left padding: ``position = cumsum(attention_mask) - 1`` in the prompt, and the
``j``-th generated token of a user sits at ``n_real + j`` (``n_real``: the user's real prompt tokens).

Scores: ``log_softmax`` over the **full** vocabulary at every step, restricted to the current level's code tokens,
summed over the ``L`` codes -- what ``generate(length_penalty=0, max_new_tokens=L)`` accumulates. The closing EOS
is **not** scored by default; ``score_eos=True`` runs one more step (every final beam fed its last code) and adds
``log p(EOS | prompt, identifier)`` before re-ranking, which equals ``generate(max_new_tokens=L + 1)`` with a trie
that allows only EOS after a full identifier (the beams kept are the same ``K``; only their order may change).
Test: ``tests/genrec/test_lcrec_decoder.py`` (tiny random Llama and Qwen2, batched left-padded prompts: identical
identifiers and scores to ``generate`` + :class:`~letter_fast.genrec.TrieLogitsProcessor` and + a dict trie).

``mode="hf"`` is a generic fallback for other architectures: the model's own forward with its cache, prefilled at
``B`` rows, expanded to ``B x K`` at the first step and reordered through ``parent`` at every step (``generate``'s
bookkeeping minus the ``K``-fold prefill).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from letter_fast.genrec.beam_search import constrained_beam_search
from letter_fast.genrec.item_index import ItemIndex
from letter_fast.ops.beam_attention import extend_ancestors

_MODES = ("shared", "hf")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _base_model(model):
    """The ``*ForCausalLM`` under a PEFT wrapper (its LoRA layers stay in place), else the model itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _cache_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[B, kv_heads, S, d]`` of one layer of an HF cache (transformers 5 layers, 4.x lists)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[layer].keys, layers[layer].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer][0], cache[layer][1]


def _norm_eps(norm) -> float:
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None:
        raise ValueError(f"LCRecDecoder: {type(norm).__name__} has no variance_epsilon / eps")
    return float(eps)


def _is_silu(act) -> bool:
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ in ("SiLUActivation", "SiLU")


def _unfusable(base, layers) -> Optional[str]:
    """Why the decode steps cannot run on fused weight copies (None: they can)."""
    linear = torch.nn.Linear
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return f"layer {i}'s MLP is not the gated Llama MLP (gate_proj / up_proj / down_proj)"
        mods = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if any(type(m) is not linear for m in mods):
            return (f"layer {i} has projections that are not plain nn.Linear (unmerged LoRA adapters?); "
                    "merge them first (peft: model.merge_and_unload()) or pass fused=False")
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if type(norm).__name__ not in ("LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm") or \
                    getattr(norm, "weight", None) is None:
                return f"layer {i}'s {type(norm).__name__} is not a Llama-style RMSNorm"
    if type(base.lm_head) is not linear:
        return "the output head is not a plain nn.Linear"
    if type(base.model.norm).__name__ not in ("LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm"):
        return "the final norm is not a Llama-style RMSNorm"
    return None


def _code_table(code_token_ids, index: ItemIndex) -> torch.Tensor:
    """``[L, N_max]`` token id of each (level, code) from ``[L]`` offsets or an ``[L, N]`` table."""
    table = torch.as_tensor(code_token_ids).long().cpu()
    L, levels = index.num_levels, index.codes_per_level
    if table.dim() == 1:
        if table.numel() != L:
            raise ValueError(f"code_token_ids as offsets must have one entry per level (L={L}), got {table.numel()}")
        table = table[:, None] + torch.arange(max(levels))[None, :]
    elif table.dim() != 2 or table.shape[0] != L or table.shape[1] < max(levels):
        raise ValueError(f"code_token_ids must be [L] offsets or an [L, N] = [{L}, >= {max(levels)}] table, got shape "
                         f"{tuple(table.shape)}")
    if int(table.min()) < 0:
        raise ValueError("code_token_ids must be >= 0")
    return table[:, :max(levels)].contiguous()


def check_left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, op: str = "LCRecDecoder") -> None:
    """Raise unless ``attention_mask [B, S]`` is left padding (0s then 1s) with a real token in every row."""
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"{op}: input_ids and attention_mask must both be [B, S], got {tuple(input_ids.shape)} and "
                         f"{tuple(attention_mask.shape)}")
    if input_ids.shape[0] and input_ids.shape[1] == 0:
        raise ValueError(f"{op}: the prompts are empty")
    mask = attention_mask.long()
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError(f"{op}: prompts must be left-padded (attention_mask 0s then 1s, as a tokenizer with "
                         "padding_side='left' builds them); a right-padded batch would decode after padding")
    if mask.numel() and bool((mask[:, -1] == 0).any()):
        raise ValueError(f"{op}: a prompt has no real token (its attention_mask row is all 0)")


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> left-padded ``(input_ids, attention_mask)`` ``[B, max_len]``."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("left_pad: a prompt is empty")
    S = max((len(p) for p in prompts), default=0)
    ids = torch.full((len(prompts), S), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros(len(prompts), S, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, S - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[row, S - len(p):] = 1
    return ids.to(device), mask.to(device)


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """``generate``'s positions under left padding: real tokens count from 0, padding gets 0."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


class LCRecDecoder:
    """Step functions and :meth:`recommend` over an LC-Rec model (see the module docstring).

    Args:
        model: a ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``MistralForCausalLM`` (or a PEFT model over one) whose
            vocabulary holds the code tokens. Put in eval mode while decoding.
        index: the item index (moved to the model's device).
        code_token_ids: ``[L]`` offsets (code ``n`` of level ``l`` is token ``offset[l] + n``) or an ``[L, N]`` table.
        eos_token_id: the token that closes a response (only used by ``score_eos``); default the model's.
        pad_token_id: pads token-list prompts (default the model's pad token, else EOS).
        mode: ``"shared"`` (prompt cache shared by the beams, the fast path) or ``"hf"`` (the model's forward and
            cache, expanded and reordered per step; any causal LM).
        fused: ``mode="shared"`` decode steps on fused weight copies (q/k/v and gate/up concatenated, read once here)
            instead of the model's modules. Default: fused when every projection is a plain ``nn.Linear`` and the
            MLP is the gated Llama MLP; a PEFT model with unmerged LoRA layers then falls back to module calls
            (``merge_and_unload`` first to get the fused path). ``True`` raises where fusing is impossible.
        dtype: the matmul precision of the fused decode steps (default: the model's). ``torch.bfloat16`` runs the
            projections and the output head in bfloat16 (AVX512-BF16 / AMX CPUs, GPUs) with a float32 residual
            stream, attention and log-softmax; beams then match the float32 ones only up to bf16 rounding.

    The fused weights are copies taken here: build a new decoder after further training.
    """

    def __init__(self, model, index: ItemIndex, code_token_ids, eos_token_id: Optional[int] = None,
                 pad_token_id: Optional[int] = None, mode: str = "shared", fused: Optional[bool] = None,
                 dtype: Optional[torch.dtype] = None):
        if not isinstance(index, ItemIndex):
            raise TypeError(f"LCRecDecoder: index must be an ItemIndex, got {type(index).__name__}")
        if mode not in _MODES:
            raise ValueError(f"LCRecDecoder: mode must be one of {_MODES}, got {mode!r}")
        self.model, self.mode = model, mode
        self.base = base = _base_model(model)
        cfg = base.config
        self.device = next(model.parameters()).device
        self.index = index.to(self.device)
        self.token_of = _code_table(code_token_ids, index).to(self.device)
        vocab = base.get_output_embeddings().weight.shape[0]
        if int(self.token_of.max()) >= vocab:
            raise ValueError(f"LCRecDecoder: code token {int(self.token_of.max())} is outside the model's "
                             f"vocabulary of {vocab} tokens; add the code tokens and resize_token_embeddings first")
        eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
        self.eos_token_id = int(eos[0] if isinstance(eos, (list, tuple)) else eos) if eos is not None else None
        pad = pad_token_id if pad_token_id is not None else getattr(cfg, "pad_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_id
        L = index.num_levels
        # contiguous code blocks are sliced out of the logits; any other table is gathered
        blocks = self.token_of - self.token_of[:, :1]
        self._offsets = ([int(self.token_of[t, 0]) for t in range(L)]
                         if bool((blocks == torch.arange(blocks.shape[1], device=self.device)).all()) else None)
        # transformers >= 5.x names the cache argument ``cache`` (``past_key_values`` deprecated)
        self._cache_kwarg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self._storage: dict[str, torch.Tensor] = {}     # reusable step outputs, see _buffer
        self._fused = None
        if mode == "shared":
            self._check_architecture(cfg)
            self._fuse(fused, dtype)
        elif fused or dtype is not None:
            raise ValueError("LCRecDecoder: fused / dtype apply to mode='shared' only")

    # ----------------------------------------------------------------------------------------------- set-up checks

    def _check_architecture(self, cfg) -> None:
        inner = getattr(self.base, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None or not hasattr(inner, "rotary_emb") or not hasattr(inner, "norm"):
            raise ValueError(f"LCRecDecoder(mode='shared') implements Llama / Qwen2 / Mistral decoders; "
                             f"{type(self.base).__name__} has no model.layers / rotary_emb / norm. Use mode='hf'")
        for layer in layers:
            attn = layer.self_attn
            if not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")) or \
                    hasattr(attn, "q_norm") or not hasattr(layer, "mlp"):
                raise ValueError(f"LCRecDecoder(mode='shared'): layer {type(layer).__name__} is not a Llama-style "
                                 "decoder layer (q/k/v/o projections, no q/k norms); use mode='hf'")
        self.layers = layers
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scaling = getattr(layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        window = getattr(cfg, "sliding_window", None)
        uses_window = getattr(cfg, "use_sliding_window", window is not None) and window is not None
        if getattr(cfg, "layer_types", None) is not None:
            uses_window = uses_window and any(t == "sliding_attention" for t in cfg.layer_types)
        self.sliding_window = int(window) if uses_window else None


    def _fuse(self, fused: Optional[bool], dtype: Optional[torch.dtype]) -> None:
        """Concatenated weight copies for the decode steps (``self._fused``), or None for module calls."""
        why = _unfusable(self.base, self.layers)
        if fused is None:
            fused = why is None
        elif fused and why is not None:
            raise ValueError(f"LCRecDecoder(fused=True): {why}")
        if not fused:
            if dtype is not None:
                raise ValueError("LCRecDecoder: dtype needs the fused path (fused=False or an unmerged PEFT model)")
            return
        dt = self.dtype = dtype or next(self.base.parameters()).dtype

        def bias(*mods):
            bs = [m.bias for m in mods]
            if all(b is None for b in bs):
                return None
            return torch.cat([b if b is not None else m.weight.new_zeros(m.weight.shape[0])
                              for b, m in zip(bs, mods)]).detach().to(dt)

        def cat(*mods):
            return torch.cat([m.weight for m in mods]).detach().to(dt)

        layers = []
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            n1, n2 = layer.input_layernorm, layer.post_attention_layernorm
            layers.append(dict(
                ln1=n1.weight.detach(), eps1=_norm_eps(n1), ln2=n2.weight.detach(), eps2=_norm_eps(n2),
                w_qkv=cat(attn.q_proj, attn.k_proj, attn.v_proj), b_qkv=bias(attn.q_proj, attn.k_proj, attn.v_proj),
                w_o=cat(attn.o_proj), b_o=bias(attn.o_proj),
                w_gu=cat(mlp.gate_proj, mlp.up_proj), b_gu=bias(mlp.gate_proj, mlp.up_proj),
                w_down=cat(mlp.down_proj), b_down=bias(mlp.down_proj),
                act=F.silu if _is_silu(mlp.act_fn) else mlp.act_fn, inter=mlp.gate_proj.weight.shape[0]))
        norm = self.base.model.norm
        head = self.base.lm_head
        self._fused = dict(layers=layers, norm=norm.weight.detach(), eps=_norm_eps(norm), w_head=cat(head),
                           b_head=bias(head))

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A ``shape`` view of the decoder's reusable storage ``name`` (grown when too small); its content lives
        until the next request for the same name. Decoding asks for the same shapes at every step and batch: a
        fresh 60 MB logits tensor (320 rows x 50k tokens) is fresh memory from the OS at every step, and faulting
        its pages in costs about as much as the product that fills it."""
        size = math.prod(shape)
        buf = self._storage.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype:
            buf = self._storage[name] = torch.empty(size, dtype=dtype, device=self.device)
        return buf[:size].view(shape)

    def _linear(self, name: str, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``x @ weight^T (+ bias)`` into the reusable buffer ``name``, in the matmul dtype."""
        out = self._buffer(name, (x.shape[0], weight.shape[0]), weight.dtype)
        x = x.to(weight.dtype)
        if bias is None:
            return torch.mm(x, weight.t(), out=out)
        return torch.addmm(bias, x, weight.t(), out=out)

    # ------------------------------------------------------------------------------------------------- prefill

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The model's forward on the prompts at batch width B: (level-0 log-probs over the vocabulary, cache)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_position_ids(attention_mask),
                         use_cache=True, logits_to_keep=1)
        return F.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values

    def _level(self, log_probs: torch.Tensor, t: int) -> torch.Tensor:
        n = self.index.codes_per_level[t]
        if self._offsets is not None:
            return log_probs[:, self._offsets[t]:self._offsets[t] + n]
        return log_probs.index_select(1, self.token_of[t, :n])

    # --------------------------------------------------------------------------------------------- step functions

    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_steps: Optional[int] = None) -> Callable:
        """Prefill one batch of users and return ``step_fn(prefix, parent) -> log_probs [rows, N_t]``.

        ``input_ids`` / ``attention_mask`` ``[B, S]`` left-padded. Rows after the first step are user-major
        (``row = user * beams + beam``), as :func:`constrained_beam_search` lays them out. ``step_fn`` also accepts
        ``t = L`` (the prefix is a full identifier) and then returns ``[rows, vocab]`` log-probs (the EOS step).
        """
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        check_left_padded(input_ids, attention_mask)
        L = self.index.num_levels
        window = self.sliding_window if self.mode == "shared" else None
        if window is not None and input_ids.shape[1] + L + 1 > window:
            raise ValueError(f"LCRecDecoder: prompts of {input_ids.shape[1]} tokens exceed the sliding window "
                             f"({self.sliding_window}) this decoder does not implement; use mode='hf'")
        B = input_ids.shape[0]
        level0, cache = self._prefill(input_ids, attention_mask)
        next_pos = attention_mask.long().sum(1)                       # position of the first generated token
        token_of = self.token_of
        if self.mode == "hf":
            return self._hf_steps(B, level0, cache, attention_mask, next_pos)
        S = input_ids.shape[1]
        prompt_kv = [_cache_kv(cache, i) for i in range(len(self.layers))]    # each [B, kv_heads, S, d], not copied
        # additive padding mask of the prompt keys, laid out like the prompt scores [B, 1, 1, S]
        pad_bias = torch.zeros(B, 1, 1, S, dtype=prompt_kv[0][0].dtype, device=self.device)
        pad_bias.masked_fill_(attention_mask[:, None, None, :] == 0, float("-inf"))
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        G = H // KV
        inner = self.base.model
        state: dict = {}

        @torch.no_grad()
        def step_fn(prefix: torch.Tensor, parent: Optional[torch.Tensor]) -> torch.Tensor:
            t = prefix.shape[1]
            if t == 0:
                state.clear()
                return self._level(level0, 0)
            if t > L:
                raise ValueError(f"LC-Rec step_fn called for step {t} but identifiers have {L} levels")
            rows = prefix.shape[0]
            if rows % B:
                raise ValueError(f"step_fn got {rows} rows, not a multiple of the {B} users of this batch")
            K = rows // B
            if t == 1:
                state.update(k=[[] for _ in self.layers], v=[[] for _ in self.layers],
                             anc=torch.empty(0, rows, dtype=torch.long, device=self.device), K=K)
            else:
                if K != state["K"]:
                    raise ValueError(f"step_fn: {K} beams per user at step {t} but {state['K']} at step 1")
                state["anc"] = extend_ancestors(state["anc"], parent.to(self.device))
            anc = state["anc"]
            tokens = token_of[t - 1].index_select(0, prefix[:, -1].to(self.device))
            positions = (next_pos + (t - 1)).repeat_interleave(K)                               # [rows]
            x = inner.embed_tokens(tokens)                                                      # [rows, d]
            cos, sin = inner.rotary_emb(x, positions[None])                                     # [1, rows, D]
            cos, sin = cos[0, :, None, :], sin[0, :, None, :]                                   # [rows, 1, D]
            if self._fused is not None:
                x = self._fused_layers(x, cos, sin, state, t, B, K, prompt_kv, pad_bias, L)
                f = self._fused
                h = F.rms_norm(x, (x.shape[-1],), f["norm"], f["eps"])
                logits = self._linear("head", h, f["w_head"], f["b_head"])
                log_probs = self._buffer("log_probs", logits.shape, torch.float32)
                torch._log_softmax(logits.float(), -1, False, out=log_probs)
                # a copy: the buffer is overwritten by the next step
                return log_probs.clone() if t == L else self._level(log_probs, t).clone()
            for i, layer in enumerate(self.layers):
                attn = layer.self_attn
                h = layer.input_layernorm(x)
                q = attn.q_proj(h).view(rows, H, D)
                k = attn.k_proj(h).view(rows, KV, D)
                v = attn.v_proj(h).view(rows, KV, D)
                q = q * cos + _rotate_half(q) * sin
                k = k * cos + _rotate_half(k) * sin
                state["k"][i].append(k)
                state["v"][i].append(v)
                # this row's own generated keys/values: its ancestors' at earlier steps, then its own
                own_k = torch.stack([state["k"][i][p].index_select(0, anc[p]) for p in range(t - 1)] + [k], 1)
                own_v = torch.stack([state["v"][i][p].index_select(0, anc[p]) for p in range(t - 1)] + [v], 1)
                pk, pv = prompt_kv[i]                                                           # [B, KV, S, D]
                # prompt scores: a user's K beams x G query heads per key head are one query axis
                qg = q.view(B, K, KV, G, D).permute(0, 2, 1, 3, 4).reshape(B, KV, K * G, D)
                s_prompt = torch.matmul(qg, pk.transpose(-1, -2)) * self.scaling + pad_bias      # [B, KV, K*G, S]
                qr = q.view(rows, KV, G, D)
                s_own = torch.einsum("rkgd,rtkd->rkgt", qr, own_k) * self.scaling               # [rows, KV, G, t]
                s_prompt = s_prompt.view(B, KV, K, G, S).permute(0, 2, 1, 3, 4).reshape(rows, KV, G, S)
                p = torch.softmax(torch.cat([s_prompt, s_own], -1).float(), dim=-1).to(q.dtype)
                p_prompt = p[..., :S].reshape(B, K, KV, G, S).permute(0, 2, 1, 3, 4).reshape(B, KV, K * G, S)
                a = torch.matmul(p_prompt, pv).view(B, KV, K, G, D).permute(0, 2, 1, 3, 4).reshape(rows, KV, G, D)
                a = a + torch.einsum("rkgt,rtkd->rkgd", p[..., S:], own_v)
                x = x + attn.o_proj(a.reshape(rows, H * D))
                x = x + layer.mlp(layer.post_attention_layernorm(x))
            log_probs = F.log_softmax(self.base.lm_head(inner.norm(x)).float(), dim=-1)
            return log_probs if t == L else self._level(log_probs, t)

        return step_fn

    def _fused_layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, state: dict, t: int, B: int,
                      K: int, prompt_kv: list, pad_bias: torch.Tensor, L: int) -> torch.Tensor:
        """The decoder layers of one step on the fused weight copies: ``x [rows, d]`` -> ``[rows, d]``.

        Same arithmetic as the module path (RMSNorm, RoPE ``q cos + rotate_half(q) sin``, one softmax over the
        prompt's and the beam's own keys, SiLU-gated MLP) with q/k/v and gate/up each one matmul into reused
        buffers, RoPE applied to q and k together, and every layer's ancestor keys/values gathered in one go.
        """
        f = self._fused
        rows, d = x.shape
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        G, half, n = H // KV, self.head_dim // 2, len(f["layers"])
        S = pad_bias.shape[-1]
        if t == 1:
            # the generated keys/values of every layer and step, where each step's rows wrote them
            state["gen"] = torch.empty(2, n, L, rows, KV, D, dtype=x.dtype, device=x.device)
        gen = state["gen"]
        # this step's own keys/values of every row: ancestors' (steps < t-1) gathered once for all layers, then its own
        own = self._buffer("own", (2, n, t, rows, KV, D), x.dtype)
        anc = state["anc"]
        for p in range(t - 1):
            torch.index_select(gen[:, :, p], 2, anc[p], out=own[:, :, p])
        # rotate_half(x) * sin == flip-halves(x) * [-sin_1, sin_2] (sign flips are exact)
        sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], -1)
        scaling = self.scaling
        for i, w in enumerate(f["layers"]):
            h = F.rms_norm(x, (d,), w["ln1"], w["eps1"])
            qkv = self._linear("qkv", h, w["w_qkv"], w["b_qkv"]).to(x.dtype)
            qk = qkv[:, :(H + KV) * D].view(rows, H + KV, D)
            swapped = qk.view(rows, H + KV, 2, half).flip(2).view(rows, H + KV, D)
            qk = qk * cos + swapped * sin_signed
            k, v = qk[:, H:], qkv[:, (H + KV) * D:].view(rows, KV, D)
            gen[0, i, t - 1] = k
            gen[1, i, t - 1] = v
            own[0, i, t - 1] = k
            own[1, i, t - 1] = v
            own_k = own[0, i].view(t, B, K, KV, D)
            own_v = own[1, i].view(t, B, K, KV, D)
            # a user's K beams x G query heads per key head are one query axis against its prompt keys
            qb = qk[:, :H].reshape(B, K, KV, G, D).permute(0, 2, 1, 3, 4)                     # [B, KV, K, G, D]
            pk, pv = prompt_kv[i]                                                            # [B, KV, S, D]
            s_prompt = torch.matmul(qb.reshape(B, KV, K * G, D), pk.transpose(-1, -2)) * scaling + pad_bias
            s_own = torch.einsum("bhkgd,tbkhd->bhkgt", qb, own_k) * scaling                # [B, KV, K, G, t]
            p = torch.softmax(torch.cat([s_prompt, s_own.reshape(B, KV, K * G, t)], -1), dim=-1)
            a = torch.matmul(p[..., :S], pv).view(B, KV, K, G, D)
            a = a + torch.einsum("bhkgt,tbkhd->bhkgd", p[..., S:].reshape(B, KV, K, G, t), own_v)
            a = a.permute(0, 2, 1, 3, 4).reshape(rows, H * D)
            x = x + self._linear("o", a, w["w_o"], w["b_o"])
            h = F.rms_norm(x, (d,), w["ln2"], w["eps2"])
            gu = self._linear("gu", h, w["w_gu"], w["b_gu"])
            inter = w["inter"]
            act = w["act"](gu[:, :inter]) * gu[:, inter:]
            x = x + self._linear("down", act, w["w_down"], w["b_down"]).to(x.dtype)
        return x

    def _hf_steps(self, B: int, level0: torch.Tensor, cache, attention_mask: torch.Tensor,
                  next_pos: torch.Tensor) -> Callable:
        """``mode="hf"``: the model's forward with its cache, expanded to the beams at step 1, reordered per step."""
        L = self.index.num_levels
        state: dict = {}

        @torch.no_grad()
        def step_fn(prefix: torch.Tensor, parent: Optional[torch.Tensor]) -> torch.Tensor:
            t = prefix.shape[1]
            if t == 0:
                return self._level(level0, 0)
            rows = prefix.shape[0]
            K = rows // B
            if t == 1:
                cache.reorder_cache(torch.arange(B, device=self.device).repeat_interleave(K))
                state["mask"] = attention_mask.repeat_interleave(K, 0)
                state["pos"] = next_pos.repeat_interleave(K)
            else:
                cache.reorder_cache(parent.to(self.device))
            state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(rows, 1)], 1)
            tokens = self.token_of[t - 1].index_select(0, prefix[:, -1].to(self.device))
            out = self.model(input_ids=tokens[:, None], attention_mask=state["mask"], **{self._cache_kwarg: cache},
                             position_ids=(state["pos"] + t - 1)[:, None], use_cache=True)
            log_probs = F.log_softmax(out.logits[:, -1].float(), dim=-1)
            return log_probs if t == L else self._level(log_probs, t)

        return step_fn

    # ------------------------------------------------------------------------------------------------- recommend

    def _eos_rerank(self, step_fn: Callable, last_prefix: torch.Tensor, identifiers: torch.Tensor,
                    scores: torch.Tensor, B: int, K: int):
        """Add ``log p(EOS)`` after every final beam (one more step), then re-rank each user's beams."""
        codes = self.index.codes_of_identifier(identifiers.clamp(min=0).reshape(-1)).reshape(B, K, -1)
        L = codes.shape[-1]
        users = torch.arange(B, device=codes.device)
        if last_prefix.shape[0] == B:                                          # L = 1: the last step was the prompt
            parent = users.repeat_interleave(K)
        else:
            # final beam j of user b extends the row of the last step with the same first L-1 codes (those rows
            # are distinct trie nodes, so the match is unique)
            prev = last_prefix.reshape(B, K, -1).to(codes.device)
            same = (codes[:, :, None, :L - 1] == prev[:, None, :, :]).all(-1)   # [B, K, K]
            parent = (same.float().argmax(-1) + users[:, None] * K).reshape(-1)
        log_probs = step_fn(codes.reshape(B * K, L), parent)
        eos = log_probs[:, self.eos_token_id].reshape(B, K)
        total = torch.where(identifiers >= 0, scores + eos, scores)
        order = torch.sort(total, dim=1, descending=True, stable=True).indices
        return identifiers.gather(1, order), total.gather(1, order)

    @torch.no_grad()
    def recommend(self, prompts: Optional[Sequence[Sequence[int]]] = None, *, input_ids: Optional[torch.Tensor] = None,
                  attention_mask: Optional[torch.Tensor] = None, num_beams: int = 20, num_return: Optional[int] = None,
                  batch_size: int = 16, score_eos: bool = False, return_identifiers: bool = False,
                  backend: Optional[str] = None):
        """Top items per user: ``(item_ids [U, R], scores [U, R])`` (+ identifier ids with ``return_identifiers``).

        Give ``prompts`` (token id lists, one per user) or a left-padded ``input_ids`` + ``attention_mask``. Users
        are decoded ``batch_size`` at a time in order of prompt length (each batch padded only to its longest
        prompt); rows come back in input order. Only real items are returned, distinct identifiers ranked by
        summed log-probability (``score_eos``: plus the closing EOS, see the module docstring); with collisions an
        identifier stands for its group of items and ``item_ids`` holds its first item
        (``index.items_of_identifier`` expands it). A user with fewer reachable items than ``num_return`` gets
        item -1 / score -inf in the remaining slots. ``backend``: the trie step kernel of the search.
        """
        if prompts is not None:
            if input_ids is not None:
                raise ValueError("recommend: give prompts or input_ids/attention_mask, not both")
            if self.pad_token_id is None:
                raise ValueError("recommend: token-list prompts need a pad_token_id (the model has none)")
            input_ids, attention_mask = left_pad(prompts, self.pad_token_id)
        elif input_ids is None or attention_mask is None:
            raise ValueError("recommend: give prompts, or input_ids and attention_mask")
        if num_beams < 1:
            raise ValueError(f"recommend: num_beams must be >= 1, got {num_beams}")
        if score_eos and self.eos_token_id is None:
            raise ValueError("recommend: score_eos needs an eos_token_id")
        num_return = num_return or num_beams
        check_left_padded(input_ids, attention_mask, "recommend")
        U = input_ids.shape[0]
        lengths = attention_mask.long().sum(1).cpu()
        order = torch.argsort(lengths, stable=True)
        item_ids = torch.full((U, num_return), -1, dtype=torch.long)
        scores = torch.full((U, num_return), float("-inf"))
        identifiers = torch.full((U, num_return), -1, dtype=torch.long)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, U, batch_size):
                rows = order[start:start + batch_size]
                S = int(lengths[rows].max())                                   # left padding: keep the last S columns
                ids, mask = input_ids[rows, -S:].to(self.device), attention_mask[rows, -S:].to(self.device)
                step_fn = self.start(ids, mask)
                B = rows.numel()
                if score_eos:
                    seen: dict = {}

                    def recording(prefix, parent, step_fn=step_fn, seen=seen):
                        seen["prefix"] = prefix
                        return step_fn(prefix, parent)

                    _, sc, idents = constrained_beam_search(recording, B, num_beams, self.index,
                                                            return_identifiers=True, backend=backend)
                    idents, sc = self._eos_rerank(step_fn, seen["prefix"], idents, sc, B, num_beams)
                    idents, sc = idents[:, :num_return], sc[:, :num_return]
                    items = self.index.first_item(idents)
                else:
                    items, sc, idents = constrained_beam_search(step_fn, B, num_beams, self.index,
                                                                num_return=num_return, return_identifiers=True,
                                                                backend=backend)
                item_ids[rows] = items.cpu()
                scores[rows] = sc.float().cpu()
                identifiers[rows] = idents.cpu()
        finally:
            self.model.train(was_training)
        if return_identifiers:
            return item_ids, scores, identifiers
        return item_ids, scores


# ------------------------------------------------------------------------------------- the usual baselines, text


def dict_trie_prefix_fn(codes: torch.Tensor, code_token_ids, eos_token_id: int, prompt_length: int) -> Callable:
    """The customary LC-Rec constraint for ``generate``: a Python dict from generated token prefixes to allowed next
    tokens, EOS after a full identifier (and for a prefix no item has). ``codes [V, L]`` every item's identifier;
    ``code_token_ids`` ``[L]`` offsets or an ``[L, N]`` table; ``prompt_length``: the padded prompt length of the
    batch (``input_ids.shape[1]``; generated tokens start there). The baseline the fast path is measured against."""
    codes = torch.as_tensor(codes).long().cpu()
    table = torch.as_tensor(code_token_ids).long().cpu()
    if table.dim() == 1:
        tokens = (codes + table[None, :]).tolist()
    else:
        tokens = torch.stack([table[t][codes[:, t]] for t in range(codes.shape[1])], 1).tolist()
    trie: dict[tuple, set] = {}
    for row in tokens:
        for t in range(len(row)):
            trie.setdefault(tuple(row[:t]), set()).add(row[t])
        trie.setdefault(tuple(row), set()).add(eos_token_id)
    allowed = {key: sorted(v) for key, v in trie.items()}
    eos_only = [eos_token_id]

    def prefix_allowed_tokens_fn(batch_id: int, input_ids: torch.Tensor) -> list:
        return allowed.get(tuple(input_ids[prompt_length:].tolist()), eos_only)

    return prefix_allowed_tokens_fn


@torch.no_grad()
def hf_generate_recommend(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_levels: int,
                          num_beams: int = 20, num_return: Optional[int] = None, *, logits_processor=None,
                          prefix_fn: Optional[Callable] = None, with_eos: bool = False):
    """Recommend with Hugging Face ``generate`` (the baseline): ``(generated tokens [B, R, L], scores [B, R])``.

    Exactly one of ``logits_processor`` (e.g. :class:`~letter_fast.genrec.TrieLogitsProcessor` with
    ``prompt_length=input_ids.shape[1]``) and ``prefix_fn`` (:func:`dict_trie_prefix_fn`) constrains the search.
    ``length_penalty=0``: scores are summed log-probabilities of the ``L`` codes (``with_eos``: and the EOS).
    """
    if (logits_processor is None) == (prefix_fn is None):
        raise ValueError("hf_generate_recommend: give exactly one of logits_processor and prefix_fn")
    num_return = num_return or num_beams
    constraint = dict(prefix_allowed_tokens_fn=prefix_fn) if prefix_fn is not None else \
        dict(logits_processor=[logits_processor])
    L = num_levels
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                         num_return_sequences=num_return, max_new_tokens=L + 1 if with_eos else L,
                         min_new_tokens=L, length_penalty=0.0, early_stopping=True, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, **constraint)
    S = input_ids.shape[1]
    seq = out.sequences[:, S:S + L]
    return seq.reshape(input_ids.shape[0], num_return, L), out.sequences_scores.reshape(-1, num_return)


def tokens_to_identifiers(tokens: torch.Tensor, index: ItemIndex, code_token_ids) -> torch.Tensor:
    """Generated code tokens ``[..., L]`` -> identifier ids of ``index`` (-1 where the tokens are no item's)."""
    table = _code_table(code_token_ids, index).to(tokens.device)
    flat = tokens.reshape(-1, tokens.shape[-1])
    codes = torch.full_like(flat, -1)
    for t in range(flat.shape[1]):
        hit = flat[:, t, None] == table[t][None, :index.codes_per_level[t]]
        codes[:, t] = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(codes[:, t], -1))
    valid = (codes >= 0).all(1)
    ident = torch.full((flat.shape[0],), -1, dtype=torch.long, device=tokens.device)
    if bool(valid.any()):
        ident[valid] = index.identifier_of(codes[valid].to(index.device)).to(tokens.device)
    return ident.reshape(tokens.shape[:-1])


@torch.no_grad()
def generate_text(model, tokenizer, prompts: Union[str, Sequence[str]], max_new_tokens: int = 64,
                  num_beams: int = 1, **generate_kwargs) -> list[str]:
    """Unconstrained text generation for LC-Rec's text-output tasks (e.g. index -> item title): HF ``generate`` on
    left-padded prompts, the new tokens decoded (special tokens skipped). Greedy by default."""
    if isinstance(prompts, str):
        prompts = [prompts]
    side = getattr(tokenizer, "padding_side", "right")
    tokenizer.padding_side = "left"
    try:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
    new = out[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new, skip_special_tokens=True)
