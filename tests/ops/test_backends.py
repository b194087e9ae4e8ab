"""The one backend resolver: every entry point honours ``backend=`` and ``LETTER_FAST_BACKEND``,
and a backend that cannot run raises BackendUnavailable with the reason instead of falling back."""

import importlib

import pytest
import torch

from letter_fast.genrec import ItemIndex, TrieLogitsProcessor, constrained_beam_search
from letter_fast.ops import (
    BackendUnavailable,
    backends,
    beam_attention,
    contrastive_loss,
    extend_ancestors,
    residual_quantize,
    sinkhorn_assign,
    trie_build,
    trie_step,
    trie_walk,
)
from tests.conftest import NATIVE
from tests.genrec.helpers import random_catalog


def _index():
    return ItemIndex.from_codes(random_catalog(60, 3, 5, seed=3), num_codes=5, backend="reference")


def _rq(backend):
    g = torch.Generator().manual_seed(0)
    return residual_quantize(torch.randn(9, 6, generator=g), torch.randn(2, 5, 6, generator=g), backend=backend)


def _contrastive(backend):
    g = torch.Generator().manual_seed(1)
    return contrastive_loss(torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g), backend=backend)


def _step(backend):
    index = _index()
    node = torch.zeros(2, dtype=torch.long)
    lp = torch.log_softmax(torch.randn(2, 5, generator=torch.Generator().manual_seed(2)), -1)
    return trie_step(node, lp, torch.zeros(2), index.child_ptr[0], index.child_code[0], 1, 3, backend=backend)


def _walk(backend):
    return trie_walk(_index(), torch.tensor([[0, 1], [4, 4], [2, 3]]), backend=backend)


def _build(backend):
    return ItemIndex.from_codes(random_catalog(60, 3, 5, seed=3), num_codes=5, backend=backend).tensors()


def _build_op(backend):
    return trie_build(random_catalog(60, 3, 5, seed=3), (5, 5, 5), backend=backend)


def _logits(backend):
    proc = TrieLogitsProcessor(_index(), [10, 20, 30], eos_token_id=1, prompt_length=1, backend=backend)
    ids = torch.tensor([[0, 10 + 1], [0, 10 + 4], [0, 3]])
    return proc(ids, torch.randn(3, 40, generator=torch.Generator().manual_seed(4)))


def _sinkhorn(backend):
    g = torch.Generator().manual_seed(5)
    return sinkhorn_assign(torch.rand(20, 4, generator=g), backend=backend)


def _beam_attention(backend):
    g = torch.Generator().manual_seed(6)
    qkv = [torch.randn(2, 3, 2, 4, generator=g), torch.randn(6, 3, 2, 4, generator=g)]
    anc = extend_ancestors(torch.empty(0, 2, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1, 1]))
    return beam_attention(qkv, anc, torch.randn(2, 2, generator=g), backend=backend)


def _search(backend):
    index = _index()
    g = torch.Generator().manual_seed(7)

    def step_fn(prefix, parent):
        return torch.log_softmax(torch.randn(prefix.shape[0], 5, generator=g), -1)

    return constrained_beam_search(step_fn, 2, 3, index, backend=backend)


# entry point -> (call, op of the backend table it resolves, the module whose reference it runs)
ENTRY_POINTS = {
    "residual_quantize": (_rq, "residual_quantize",
                          ("letter_fast.ops.residual_quantize", "residual_quantize_reference")),
    "contrastive_loss": (_contrastive, "contrastive_loss",
                         ("letter_fast.ops.contrastive_loss", "contrastive_loss_reference")),
    "trie_step": (_step, "trie_step", ("letter_fast.ops.trie", "trie_step_reference")),
    "constrained_beam_search": (_search, "trie_step", ("letter_fast.ops.trie", "trie_step_reference")),
    "trie_walk": (_walk, "trie_walk", ("letter_fast.ops.trie", "trie_walk_reference")),
    "trie_build": (_build_op, "trie_build", ("letter_fast.ops.trie", "trie_build_reference")),
    "ItemIndex.from_codes": (_build, "trie_build", ("letter_fast.ops.trie", "trie_build_reference")),
    "TrieLogitsProcessor": (_logits, "trie_constrain_logits",
                            ("letter_fast.ops.trie", "trie_constrain_logits_reference")),
    "sinkhorn_assign": (_sinkhorn, "sinkhorn_assign", ("letter_fast.ops.sinkhorn_assign", "sinkhorn_assign_reference")),
    "beam_attention": (_beam_attention, "beam_attention",
                       ("letter_fast.ops.beam_attention", "beam_attention_reference")),
}


def _missing_backend(op):
    """A backend the op cannot run for CPU tensors on any machine, and the reason it must give."""
    if "cuda" in backends.OPS[op].backends:
        return "cuda", "the cuda backend takes CUDA tensors"
    return "triton", f"{op} has no triton kernel"


def test_every_entry_point_op_is_in_the_table():
    assert {op for _, op, _ in ENTRY_POINTS.values()} == set(backends.OPS)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_forced_unavailable_backend_raises_with_reason(entry, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    call, op, _ = ENTRY_POINTS[entry]
    name, why = _missing_backend(op)
    with pytest.raises(BackendUnavailable, match=f"backend '{name}' cannot run here: {why}"):
        call(name)
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        call("fastest")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_environment_variable_is_honoured(entry, monkeypatch):
    call, op, (module, ref_name) = ENTRY_POINTS[entry]
    name, why = _missing_backend(op)
    monkeypatch.setenv(backends.ENV_VAR, name)
    with pytest.raises(BackendUnavailable,
                       match=f"backend '{name}' cannot run here: {why}.*LETTER_FAST_BACKEND={name}"):
        call(None)
    # LETTER_FAST_BACKEND=reference runs the reference (counted), and gives what backend="reference" gives
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    mod = importlib.import_module(module)
    ref = getattr(mod, ref_name)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return ref(*args, **kwargs)

    monkeypatch.setattr(mod, ref_name, counted)
    got = call(None)
    assert calls, f"{entry}: LETTER_FAST_BACKEND=reference did not run {ref_name}"
    monkeypatch.delenv(backends.ENV_VAR)
    want = call("reference")
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        if isinstance(g, torch.Tensor):
            assert torch.equal(g, w)
    # an explicit argument wins over the environment
    monkeypatch.setenv(backends.ENV_VAR, name)
    call("reference")


@pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_auto_takes_the_cpu_kernel_where_there_is_one(entry, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    call, op, (module, ref_name) = ENTRY_POINTS[entry]
    mod = importlib.import_module(module)

    def refuse(*args, **kwargs):
        raise AssertionError(f"{entry}: auto ran the reference although the cpu kernel runs here")

    monkeypatch.setattr(mod, ref_name, refuse)
    call(None)
    call("cpu")


def test_limits_say_why():
    limits = {op: spec.limits for op, spec in backends.OPS.items()}
    assert "exceeds the Triton kernels' register budget of 256" in limits["residual_quantize"]["triton"]({"d": 300})
    assert limits["residual_quantize"]["triton"]({"d": 256}) is None
    assert "63-bit packed key" in limits["trie_build"]["cpu"]({"key_bits": 64, "rows": 10})
    assert limits["trie_build"]["cpu"]({"key_bits": 63, "rows": 10}) is None
    assert limits["contrastive_loss"]["cuda"]({"dtype": torch.float64, "d": 4}).startswith("float64")
    assert "k=70000 exceeds" in limits["trie_step"]["cuda"]({"k": 70000})
    # auto passes over a backend whose limit refuses the inputs
    assert backends.resolve("residual_quantize", "auto", torch.device("cpu"), d=10**6) in ("cpu", "reference")


@pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")
def test_forced_cpu_build_with_too_wide_identifiers_says_why():
    codes = torch.tensor([[0, 1, 2], [2**30, 3, 1]])
    levels = [2**31 - 1] * 3  # 93 bits of identifier
    with pytest.raises(BackendUnavailable, match="63-bit packed key"):
        ItemIndex.from_codes(codes, num_codes=levels, backend="cpu")
    index = ItemIndex.from_codes(codes, num_codes=levels)  # auto: the reference builds it
    assert torch.equal(index.lookup(codes), torch.tensor([0, 1]))


def test_table_lists_every_op_and_backend():
    for device in (torch.device("cpu"), torch.device("cuda")):
        table = backends.table(device)
        assert set(table) == set(backends.OPS)
        for row in table.values():
            assert "reference" in row
            for cell in row.values():
                assert cell["runs"] == (cell["why"] is None)
                assert cell["built"] or not cell["runs"]
    cpu = backends.table(torch.device("cpu"))
    assert cpu["sinkhorn_assign"]["reference"]["runs"] and "cuda" not in cpu["sinkhorn_assign"]
    assert cpu["trie_step"]["cpu"]["runs"] == NATIVE
    notes = backends.nondeterministic_notes()
    assert [op for op, _, _ in notes] == ["residual_quantize"] and "atomics" in notes[0][2]


def test_info_without_the_extension_says_what_is_missing_and_how_to_build_it():
    # a fresh interpreter in which letter_fast._C cannot be found, as after LETTER_FAST_SKIP_NATIVE=1
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'letter_fast._C':\n"
        "            raise ModuleNotFoundError(\"No module named 'letter_fast._C'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from letter_fast import info\n"
        "info.main([])\n"
        "import torch, letter_fast as lf\n"
        "try:\n"
        "    lf.residual_quantize(torch.zeros(2, 3), torch.zeros(1, 4, 3), backend='cpu')\n"
        "except lf.BackendUnavailable as exc:\n"
        "    print('raised:', exc)\n"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "circular import" not in out
    assert "letter_fast._C: not loaded (it is not built" in out and "python setup.py build_ext --inplace" in out
    assert "raised: residual_quantize: backend 'cpu' cannot run here: the native extension letter_fast._C is not " \
           "loaded: it is not built" in out
    assert "residual_quantize      reference  built     runs" in out
