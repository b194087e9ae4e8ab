"""The trie ops: the step kernel on every backend against the reference, exactly (ties included), plus opcheck.

Build and walk are also exercised through ItemIndex in tests/genrec/test_item_index.py.
"""

import pytest
import torch

from letter_fast.genrec import ItemIndex
from letter_fast.ops import BackendUnavailable, trie_step
from letter_fast.ops.reference import trie_step_reference
from tests.conftest import FAST_CPU_BACKENDS, needs_cuda, needs_native
from tests.genrec.helpers import random_catalog

SMALL_ONLY = {"triton"}  # the Triton interpreter runs numpy per program


def step_inputs(V, L, N, level, Q, B, dtype=torch.float32, seed=0, dead=0.2, neg_inf=0.1, ties=False,
                device="cpu", noncontig=False):
    g = torch.Generator().manual_seed(seed)
    codes = random_catalog(V, L, N, seed=seed)
    index = ItemIndex.from_codes(codes, num_codes=N)
    n_nodes = index.num_nodes(level)
    R = Q * B
    node = torch.randint(0, n_nodes, (R,), generator=g)
    node[torch.rand(R, generator=g) < dead] = -1
    logits = torch.randn(R, N, generator=g)
    if ties:
        logits = logits.round()
    lp = torch.log_softmax(logits, -1)
    lp[torch.rand(R, N, generator=g) < neg_inf] = float("-inf")
    scores = -torch.rand(R, generator=g) * 3
    if ties:
        scores = scores.round()
    scores[torch.rand(R, generator=g) < dead / 2] = float("-inf")
    lp = lp.to(dtype)
    if noncontig:
        lp = lp.t().contiguous().t()  # column-major strides
    return (node.to(device), lp.to(device), scores.to(device), index.child_ptr[level].to(device),
            index.child_code[level].to(device))


def check(backend, args, B, k):
    got = trie_step(*args, B, k, backend=backend)
    ref = trie_step_reference(*[a.cpu() for a in args], B, k)
    for name, a, e in zip(("parent", "code", "child", "score"), got, ref):
        assert a.shape == e.shape, f"{name}: {tuple(a.shape)} vs {tuple(e.shape)}"
        assert a.dtype == e.dtype, f"{name}: {a.dtype} vs {e.dtype}"
        mismatch = a.cpu() != e
        if name == "score":
            mismatch &= ~(torch.isinf(a.cpu()) & torch.isinf(e))
        assert not mismatch.any(), (f"{backend} {name}: {int(mismatch.sum())}/{a.numel()} differ; first at "
                                    f"{tuple(mismatch.nonzero()[0].tolist())}: "
                                    f"{a.cpu()[mismatch][0]} vs {e[mismatch][0]}")
    return got


def test_reference_semantics():
    codes = torch.tensor([[0, 0], [0, 2], [1, 1], [2, 0], [2, 1]])
    index = ItemIndex.from_codes(codes, num_codes=3)
    # two queries of two beams at level 1: nodes 0 (prefix 0), 2 (prefix 2) | 1 (prefix 1), dead
    node = torch.tensor([0, 2, 1, -1])
    lp = torch.log(torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]]))
    scores = torch.log(torch.tensor([0.6, 0.4, 0.9, 0.1]))
    parent, code, child, score = trie_step_reference(node, lp, scores, index.child_ptr[1], index.child_code[1], 2, 3)
    # query 0: (0,0)=.30, (0,2)=.18, (2,0)=.04, (2,1)=.32 -> (2,1), (0,0), (0,2)
    assert parent.tolist()[0] == [1, 0, 0] and code.tolist()[0] == [1, 0, 2]
    assert child.tolist()[0] == [4, 0, 1]
    torch.testing.assert_close(score[0].exp(), torch.tensor([0.32, 0.30, 0.18]))
    # query 1: only (1,1); the rest is padding
    assert parent.tolist()[1] == [2, -1, -1] and code.tolist()[1] == [1, -1, -1] and child.tolist()[1] == [2, -1, -1]
    assert score[1, 1:].eq(float("-inf")).all()


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
@pytest.mark.parametrize("Q,B,k", [(1, 1, 1), (3, 1, 5), (4, 5, 5), (2, 7, 3), (3, 4, 40), (2, 12, 100), (0, 3, 2)])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_shapes(backend, Q, B, k, level):
    args = step_inputs(300, 3, 9, level, Q, B, seed=Q * 100 + B * 10 + k + level)
    check(backend, args, B, k)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("level", [0, 2])   # level 0: the root has all N children (the cpu kernel's gather-free path)
def test_dtypes_ties_noncontiguous(backend, dtype, level):
    args = step_inputs(500, 3, 7, level, 3, 6, dtype=dtype, ties=True, noncontig=True, seed=5)
    assert not args[1].is_contiguous()
    if level == 0:
        assert int(args[3][1] - args[3][0]) == 7   # a full node
    check(backend, args, 6, 8)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_wide_codebook_int32_codes(backend):
    # N > 32767 needs int32 codes; the root has ~2900 children, more than one Triton chunk (1024)
    Q = 1 if backend in SMALL_ONLY else 3
    args = step_inputs(3000, 2, 33000, 0, Q, 1, seed=6, dead=0.0, neg_inf=0.01)
    assert args[4].dtype == torch.int32 and int(args[3][1]) > 2048
    check(backend, args, 1, 4)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_large(backend):
    if backend in SMALL_ONLY:
        pytest.skip("interpreter too slow at this size; benchmarks/bench_trie.py gpu_check covers the GPU")
    args = step_inputs(100_000, 4, 256, 2, 256, 20, seed=7, dead=0.05, neg_inf=0.01)
    check(backend, args, 20, 20)


@needs_native
def test_opcheck():
    args = step_inputs(300, 3, 9, 1, 3, 4, seed=8)
    torch.library.opcheck(torch.ops.letter_fast.trie_step.default, (*args, 4, 5))
    codes = random_catalog(300, 3, 9, seed=8)
    index = ItemIndex.from_codes(codes, num_codes=9)
    torch.library.opcheck(torch.ops.letter_fast.trie_walk.default,
                          (codes[:, :2].contiguous(), index.child_ptr[:2], index.child_code[:2]))


def test_forced_unavailable_backend_says_why():
    args = step_inputs(50, 2, 5, 0, 1, 1)  # CPU tensors: the cuda backend cannot take them, GPU or not
    with pytest.raises(BackendUnavailable, match="cuda backend takes CUDA tensors, got cpu tensors"):
        trie_step(*args, 1, 2, backend="cuda")


@pytest.mark.parametrize("bad,match", [
    (dict(k=0), "k must be >= 1"),
    (dict(B=3), "multiple of beams_per_query"),
    (dict(lp=torch.zeros(4, 5, dtype=torch.long)), "float32, float16 or bfloat16"),
    (dict(lp=torch.zeros(4)), r"\[rows, N\]"),
    (dict(node=torch.zeros(3, dtype=torch.long)), "node and scores must have shape"),
])
def test_bad_input(bad, match):
    node, lp, scores, ptr, code = step_inputs(50, 2, 5, 1, 2, 2)
    node, lp = bad.get("node", node), bad.get("lp", lp)
    with pytest.raises((ValueError, TypeError), match=match):
        trie_step(node, lp, scores, ptr, code, bad.get("B", 2), bad.get("k", 3))


@needs_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_backends(backend):
    for level, (Q, B, k) in enumerate([(256, 20, 20), (7, 3, 50), (64, 1, 20)]):
        args = step_inputs(100_000, 4, 256, level, Q, B, seed=level, device="cuda")
        check(backend, args, B, k)
