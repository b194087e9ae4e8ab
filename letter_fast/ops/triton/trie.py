"""Triton trie step (math and candidate order: letter_fast/ops/trie.py and
letter_fast/ops/reference/trie.py).

Each candidate becomes one int64 key that sorts exactly like the reference order:

    key = ordered(score) << 32  |  (2^32 - 1 - (local_row * N + slot))

where ``ordered`` maps float32 bits to int32 monotonically (negative floats get their magnitude
bits flipped, -0.0 counts as +0.0). A larger key is a higher score, or an equal score at a lower
row/slot; invalid slots get INT64_MIN. Two kernels:

1. one program per beam row: its node's children (at most N) in chunks of up to 1024 slots, their
   keys bitonic-sorted (``tl.sort``) and merged chunk by chunk; the row's best
   ``KP = pow2(min(k, N))`` keys are stored;
2. one program per query: the ``B x KP`` row winners (a superset of the query's top k), sorted
   again; the first k are decoded into (parent, code, child, score), the score re-added in
   float32 exactly as everywhere else.

Memory beyond the outputs: ``[rows, KP]`` int64 keys. Nothing grows with the catalog.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_INT64_MIN = -(2**63)


@triton.jit
def _slot_keys(slot, count, lo, base, r, lp_ptr, lp_s0, lp_s1, child_code_ptr, N, B):
    real = slot < count
    code = tl.load(child_code_ptr + lo + slot, mask=real, other=0).to(tl.int64)
    lp = tl.load(lp_ptr + r * lp_s0 + code * lp_s1, mask=real, other=float("-inf")).to(tl.float32)
    s = base + lp
    ok = real & (s > float("-inf"))
    bits = s.to(tl.int32, bitcast=True)
    bits = tl.where(bits == -2147483648, 0, bits)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)
    flat = (r % B) * N + slot
    key = (ordered << 32) | (4294967295 - flat)
    return tl.where(ok, key, -9223372036854775807 - 1)


@triton.jit
def _row_keys_kernel(node_ptr, lp_ptr, lp_s0, lp_s1, scores_ptr, child_ptr_ptr, child_code_ptr, keys_ptr,
                     N, B, KP: tl.constexpr, CHUNK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    n = tl.load(node_ptr + r)
    alive = n >= 0
    n_safe = tl.where(alive, n, 0)
    lo = tl.load(child_ptr_ptr + n_safe).to(tl.int64)
    hi = tl.load(child_ptr_ptr + n_safe + 1).to(tl.int64)
    count = tl.where(alive, hi - lo, 0)
    base = tl.load(scores_ptr + r)
    slot = tl.arange(0, CHUNK).to(tl.int64)
    top = tl.sort(_slot_keys(slot, count, lo, base, r, lp_ptr, lp_s0, lp_s1, child_code_ptr, N, B), descending=True)
    # Nodes with more than CHUNK children: merge chunk by chunk, keeping the best CHUNK keys.
    for c0 in range(CHUNK, count, CHUNK):
        keys = _slot_keys(c0 + slot, count, lo, base, r, lp_ptr, lp_s0, lp_s1, child_code_ptr, N, B)
        merged = tl.sort(tl.reshape(tl.join(top, keys), (2 * CHUNK,)), descending=True)
        top, _ = tl.split(tl.permute(tl.reshape(merged, (2, CHUNK)), (1, 0)))
    tl.store(keys_ptr + r * KP + slot, top, mask=slot < KP)


@triton.jit
def _query_topk_kernel(keys_ptr, node_ptr, lp_ptr, lp_s0, lp_s1, scores_ptr, child_ptr_ptr, child_code_ptr,
                       parent_ptr, code_ptr, child_ptr, score_ptr, N, B, k,
                       KP: tl.constexpr, BP: tl.constexpr):
    q = tl.program_id(0).to(tl.int64)
    b = tl.arange(0, BP).to(tl.int64)[:, None]
    j = tl.arange(0, KP).to(tl.int64)[None, :]
    keys = tl.load(keys_ptr + (q * B + b) * KP + j, mask=(b < B) & (j < KP), other=-9223372036854775807 - 1)
    keys = tl.sort(tl.reshape(keys, (BP * KP,)), descending=True)
    pos = tl.arange(0, BP * KP).to(tl.int64)
    valid = (pos < k) & (keys != -9223372036854775807 - 1)
    flat = 4294967295 - (keys & 4294967295)
    flat = tl.where(valid, flat, 0)
    row = q * B + flat // N
    slot = flat % N
    n = tl.load(node_ptr + row, mask=valid, other=0)
    child = tl.load(child_ptr_ptr + n, mask=valid, other=0).to(tl.int64) + slot
    code = tl.load(child_code_ptr + child, mask=valid, other=0).to(tl.int64)
    lp = tl.load(lp_ptr + row * lp_s0 + code * lp_s1, mask=valid, other=0.0).to(tl.float32)
    score = tl.load(scores_ptr + row, mask=valid, other=0.0) + lp
    out = q * k + pos
    store = pos < k
    tl.store(parent_ptr + out, tl.where(valid, row, -1), mask=store)
    tl.store(code_ptr + out, tl.where(valid, code, -1), mask=store)
    tl.store(child_ptr + out, tl.where(valid, child, -1), mask=store)
    tl.store(score_ptr + out, tl.where(valid, score, float("-inf")), mask=store)


def _pow2(x: int) -> int:
    return 1 << max(0, int(x - 1).bit_length())


def trie_step_triton(node, log_probs, scores, child_ptr, child_code, beams_per_query: int, k: int):
    """Launch both kernels; inputs are validated by letter_fast.ops.trie.trie_step."""
    R, N = log_probs.shape
    B = beams_per_query
    Q = R // B
    dev = log_probs.device
    parent = torch.full((Q, k), -1, dtype=torch.long, device=dev)
    code = torch.full((Q, k), -1, dtype=torch.long, device=dev)
    child = torch.full((Q, k), -1, dtype=torch.long, device=dev)
    score = torch.full((Q, k), float("-inf"), dtype=torch.float32, device=dev)
    if Q == 0:
        return parent, code, child, score
    node = node.contiguous()
    scores = scores.contiguous()
    KP = _pow2(min(k, N))
    BP = _pow2(B)
    CHUNK = max(min(_pow2(N), 1024), KP)
    keys = torch.empty((R, KP), dtype=torch.long, device=dev)
    _row_keys_kernel[(R,)](node, log_probs, log_probs.stride(0), log_probs.stride(1), scores, child_ptr,
                           child_code, keys, N, B, KP=KP, CHUNK=CHUNK)
    _query_topk_kernel[(Q,)](keys, node, log_probs, log_probs.stride(0), log_probs.stride(1), scores, child_ptr,
                             child_code, parent, code, child, score, N, B, k, KP=KP, BP=BP)
    return parent, code, child, score
