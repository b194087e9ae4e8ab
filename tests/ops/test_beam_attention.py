import pytest
import torch

from letter_fast.ops import beam_attention, extend_ancestors
from letter_fast.ops.reference import beam_attention_reference
from tests.conftest import needs_native


def history(steps, users=5, beams=3, heads=2, d_kv=8, dtype=torch.float32, seed=0):
    """Projections of ``steps`` decoding steps (step 0: one row per user) and the ancestors of the last step."""
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(users, 3, heads, d_kv, generator=g).to(dtype)]
    anc = torch.empty(0, users, dtype=torch.long)
    for _ in range(1, steps):
        rows = users * beams
        parent = torch.randint(0, qkv[-1].shape[0], (rows,), generator=g)
        anc = extend_ancestors(anc, parent)
        qkv.append(torch.randn(rows, 3, heads, d_kv, generator=g).to(dtype))
    bias = torch.randn(heads, steps, generator=g)
    return qkv, anc, bias


def test_reference_is_attention_over_the_ancestors():
    qkv, anc, bias = history(3)
    out = beam_attention_reference(qkv, anc, bias)
    r, h = 7, 1
    rows_of = [anc[0, r], anc[1, r], r]
    q = qkv[2][r, 0, h]
    keys = torch.stack([qkv[p][rows_of[p], 1, h] for p in range(3)])
    values = torch.stack([qkv[p][rows_of[p], 2, h] for p in range(3)])
    w = torch.softmax(keys @ q + bias[h], 0)
    torch.testing.assert_close(out[r].view(2, 8)[h], w @ values)


def test_extend_ancestors_composes_parents():
    anc = extend_ancestors(torch.empty(0, 2, dtype=torch.long), torch.tensor([1, 1, 0]))
    anc = extend_ancestors(anc, torch.tensor([2, 0]))
    assert anc.tolist() == [[0, 1], [2, 0]]


@needs_native
@pytest.mark.parametrize("steps", [1, 2, 4, 5])
@pytest.mark.parametrize("shape", [dict(users=5, beams=3, heads=2, d_kv=8), dict(users=33, beams=20, heads=6, d_kv=64),
                                   dict(users=3, beams=1, heads=1, d_kv=5)])
def test_cpu_kernel_matches_reference(steps, shape):
    qkv, anc, bias = history(steps, **shape)
    torch.testing.assert_close(beam_attention(qkv, anc, bias, backend="cpu"), beam_attention_reference(qkv, anc, bias),
                               rtol=1e-5, atol=1e-5)


@needs_native
def test_cpu_kernel_bfloat16_and_non_contiguous():
    qkv, anc, bias = history(3, users=6, beams=4, heads=3, d_kv=16)
    want = beam_attention_reference(qkv, anc, bias)
    got = beam_attention([x.bfloat16() for x in qkv], anc, bias, backend="cpu")
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)
    strided = [torch.stack([x, x], dim=-1)[..., 0] for x in qkv]   # same values, non-contiguous
    assert not strided[0].is_contiguous()
    torch.testing.assert_close(beam_attention(strided, anc, bias, backend="cpu"), want, rtol=1e-5, atol=1e-5)


@needs_native
def test_cpu_kernel_empty_and_opcheck():
    qkv, anc, bias = history(3)
    empty = [x[:0] for x in qkv]
    assert beam_attention(empty[:1] + [x[:0] for x in qkv[1:]], anc[:, :0], bias, backend="cpu").shape == (0, 16)
    torch.library.opcheck(torch.ops.letter_fast.beam_attention.default, (qkv, anc, bias))


@needs_native
def test_cpu_kernel_rejects_out_of_range_ancestors():
    qkv, anc, bias = history(3)
    anc = anc.clone()
    anc[0, 4] = qkv[0].shape[0]
    with pytest.raises(RuntimeError, match="must index"):
        beam_attention(qkv, anc, bias, backend="cpu")


@pytest.mark.parametrize("change,match", [
    (lambda q, a, b: ([], a, b), "at least"),
    (lambda q, a, b: (q, a.int(), b), "anc must be int64"),
    (lambda q, a, b: (q, a, b[:, :1]), "bias must be"),
    (lambda q, a, b: (q[:-1] + [q[-1].double()], a, b), "one dtype"),
    (lambda q, a, b: ([x.double() for x in q], a, b), "float32 or bfloat16"),
])
def test_bad_input(change, match):
    qkv, anc, bias = history(3)
    with pytest.raises((ValueError, TypeError), match=match):
        beam_attention(*change(qkv, anc, bias))
