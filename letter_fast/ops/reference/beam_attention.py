"""Reference beam attention: gather each row's ancestors' keys and values, then PyTorch's attention."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def beam_attention_reference(qkv: Sequence[torch.Tensor], anc: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Gather each row's ancestors' keys/values, then scaled-dot-product attention (scale 1)."""
    cur = qkv[-1]
    rows, _, H, dk = cur.shape
    kv = [step[anc[p], 1:] for p, step in enumerate(qkv[:-1])] + [cur[:, 1:]]          # each [rows, 2, H, dk]
    kv = torch.stack(kv, dim=0)                                                        # [t + 1, rows, 2, H, dk]
    k, v = kv[:, :, 0].permute(1, 2, 0, 3), kv[:, :, 1].permute(1, 2, 0, 3)           # [rows, H, t + 1, dk]
    q = cur[:, 0, :, None]                                                             # [rows, H, 1, dk]
    mask = bias.to(cur.dtype)[None, :, None, :]                                        # [1, H, 1, t + 1]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
    return out.reshape(rows, H * dk)
