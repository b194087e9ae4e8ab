"""residual_quantize: every backend against the reference, exactly, over odd and large shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import letter_fast as lf
from letter_fast.ops import BackendUnavailable
from letter_fast.ops.reference import residual_quantize_reference
from tests.conftest import CPU_BACKENDS, FAST_CPU_BACKENDS, needs_cuda, needs_native
from tests.tolerances import assert_close, assert_valid_rq

# The Triton interpreter runs numpy per program: keep its shapes small.
SMALL_ONLY = {"triton"}


def make(B, d, L, N, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, d, generator=g).to(dtype)
    # Later levels get smaller codebooks, as trained RQ codebooks do (residuals shrink).
    scale = 0.5 ** torch.arange(L, dtype=torch.float32)[:, None, None]
    codebooks = (torch.randn(L, N, d, generator=g) * scale).to(dtype)
    return z.to(device), codebooks.to(device)


def check_backend(backend, z, codebooks):
    codes, z_hat = lf.residual_quantize(z, codebooks, backend=backend)
    ref_codes, _ = residual_quantize_reference(z, codebooks)
    assert_valid_rq(z, codebooks, codes, z_hat, ref_codes)
    return codes, z_hat


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("d", [1, 8, 32, 48, 128])
@pytest.mark.parametrize("N", [1, 7, 256, 300, 1024])
def test_widths_and_codebook_sizes(backend, d, N):
    B = 37 if backend in SMALL_ONLY else 1000
    check_backend(backend, *make(B, d, 3, N, seed=d * 1000 + N))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("L", range(1, 9))
def test_levels(backend, L):
    B = 20 if backend in SMALL_ONLY else 1000
    check_backend(backend, *make(B, 16, L, 64 if backend in SMALL_ONLY else 256, seed=L))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("B", [0, 1, 2, 9])
def test_tiny_batches(backend, B):
    codes, z_hat = check_backend(backend, *make(B, 32, 4, 256 if backend not in SMALL_ONLY else 40))
    assert codes.shape == (B, 4)


@pytest.mark.parametrize("backend", FAST_CPU_BACKENDS)
def test_large_batch(backend):
    if backend in SMALL_ONLY:
        pytest.skip("interpreter too slow for 65537 rows; covered on GPU by benchmarks/gpu_check.py")
    check_backend(backend, *make(65537, 32, 4, 256, seed=7))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(backend, dtype):
    z, codebooks = make(300 if backend not in SMALL_ONLY else 24, 32, 4, 128, dtype=dtype, seed=3)
    codes, z_hat = check_backend(backend, z, codebooks)
    assert z_hat.dtype == dtype


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mixed_codebook_dtype(backend):
    z, codebooks = make(50, 8, 2, 33, seed=4)
    check_backend(backend, z.half(), codebooks)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    B = 40 if backend in SMALL_ONLY else 513
    base = torch.randn(2 * B, 3 * 24)
    z = base[::2, ::3]  # both strides unusual
    assert not z.is_contiguous()
    codebooks = torch.randn(3, 24, 50).transpose(1, 2)  # [L, N, d] as a transposed view
    check_backend(backend, z, codebooks)
    zt = torch.randn(24, B).t()  # column-major rows
    check_backend(backend, zt, codebooks)


def test_ties_go_to_the_lowest_index():
    # Codes 1 and 3 are the same vector; code 0 is farther. Every backend must pick 1.
    codebooks = torch.tensor([[[5.0, 5.0], [1.0, 0.0], [-3.0, 0.0], [1.0, 0.0]]])
    z = torch.tensor([[1.0, 0.1], [0.9, -0.2]])
    for backend in CPU_BACKENDS:
        codes, _ = lf.residual_quantize(z, codebooks, backend=backend)
        assert codes[:, 0].tolist() == [1, 1], backend


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_codebook_gradient_matches_reference(backend):
    z, codebooks = make(64, 8, 3, 16, seed=5)
    upstream = torch.randn(64, 8)
    grads = []
    for b in ("reference", backend):
        cb = codebooks.clone().requires_grad_(True)
        _, z_hat = lf.residual_quantize(z, cb, backend=b)
        (z_hat * upstream).sum().backward()
        grads.append(cb.grad)
    assert_close(grads[1], grads[0], what="d z_hat / d codebooks")


def test_decode_and_code_embeddings():
    z, codebooks = make(100, 12, 4, 30, seed=6)
    codes, z_hat = lf.residual_quantize(z, codebooks)
    assert_close(lf.residual_dequantize(codes, codebooks), z_hat, what="residual_dequantize")
    emb = lf.residual_code_embeddings(codes, codebooks)
    assert emb.shape == (100, 4, 12)
    assert torch.equal(emb[5, 2], codebooks[2, codes[5, 2]])
    with pytest.raises(ValueError, match="codes must lie in"):
        lf.residual_dequantize(codes + 30, codebooks)
    with pytest.raises(ValueError, match="levels"):
        lf.residual_dequantize(codes[:, :3], codebooks)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(0, 70), d=st.integers(1, 40), L=st.integers(1, 5), N=st.integers(1, 90),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_random_shapes(B, d, L, N, seed):
    z, codebooks = make(B, d, L, N, seed=seed)
    ref_codes, _ = residual_quantize_reference(z, codebooks)
    for backend in CPU_BACKENDS:
        codes, z_hat = lf.residual_quantize(z, codebooks, backend=backend)
        assert_valid_rq(z, codebooks, codes, z_hat, ref_codes)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "z, codebooks, error, match",
    [
        (torch.randn(4), torch.randn(2, 3, 4), ValueError, r"z must have shape \[B, d\]"),
        (torch.randn(4, 5), torch.randn(3, 5), ValueError, r"codebooks must have shape \[L, N, d\]"),
        (torch.randn(4, 5), torch.randn(2, 3, 6), ValueError, "z has d=5 but codebooks have d=6"),
        (torch.randint(0, 3, (4, 5)), torch.randn(2, 3, 5), TypeError, "z must be one of"),
        (torch.randn(4, 5).double(), torch.randn(2, 3, 5), TypeError, r"cast it with \.float\(\)"),
        (torch.randn(4, 5), torch.randn(0, 3, 5), ValueError, "L >= 1 levels"),
        (torch.randn(4, 5), torch.randn(2, 0, 5), ValueError, "N >= 1 codes"),
        (torch.tensor([[1.0, float("nan")]]), torch.randn(1, 3, 2), ValueError,
         r"z contains 1 NaN/Inf value\(s\), first at index \(0, 1\)"),
        (torch.randn(3, 2), torch.tensor([[[1.0, float("inf")]]]), ValueError, "codebooks contains 1 NaN/Inf"),
        ([[1.0, 2.0]], torch.randn(1, 3, 2), TypeError, "z must be a torch.Tensor"),
    ],
)
def test_bad_input(backend, z, codebooks, error, match):
    with pytest.raises(error, match=match):
        lf.residual_quantize(z, codebooks, backend=backend)


def test_devices_must_match():
    z = torch.randn(3, 4, device="meta")
    with pytest.raises(ValueError, match="one device"):
        lf.residual_quantize(z, torch.randn(1, 2, 4))


def test_unknown_and_unavailable_backends(monkeypatch):
    z, codebooks = make(4, 4, 1, 3)
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        lf.residual_quantize(z, codebooks, backend="fastest")
    with pytest.raises(BackendUnavailable, match="cuda backend takes CUDA tensors"):
        lf.residual_quantize(z, codebooks, backend="cuda")
    monkeypatch.setenv("LETTER_FAST_BACKEND", "cuda")
    with pytest.raises(BackendUnavailable, match="backend 'cuda' cannot run here"):
        lf.residual_quantize(z, codebooks)
    monkeypatch.setenv("LETTER_FAST_BACKEND", "reference")
    lf.residual_quantize(z, codebooks)


def test_wide_latents_fall_back_from_register_kernels(monkeypatch):
    z, codebooks = make(5, 300, 2, 4)
    check_backend(None, z, codebooks)  # auto: cpu kernel or reference, both fine


@pytest.mark.skipif("triton" not in CPU_BACKENDS, reason="Triton interpreter not available")
def test_triton_refuses_latents_wider_than_its_register_budget():
    z, codebooks = make(5, 300, 2, 4)
    with pytest.raises(BackendUnavailable, match="register budget"):
        lf.residual_quantize(z, codebooks, backend="triton")


# ---------------------------------------------------------------- registration


# opcheck's aot_dispatch test sums every output into one accumulator that starts as the first
# output's dtype; our first output is int64 codes, so it fails casting the float z_hat into it.
# That path (AOTAutograd forward + backward) is checked by test_aot_autograd_gradient instead.
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")


@needs_native
def test_opcheck_native_op():
    z, codebooks = make(33, 8, 2, 17)
    codebooks.requires_grad_(True)
    torch.library.opcheck(torch.ops.letter_fast.residual_quantize.default, (z, codebooks), test_utils=OPCHECK_UTILS)


@pytest.mark.skipif("triton" not in CPU_BACKENDS, reason="Triton interpreter not available")
def test_opcheck_triton_op():
    from letter_fast.ops.residual_quantize import _triton_op

    z, codebooks = make(9, 8, 2, 17)
    codebooks.requires_grad_(True)
    torch.library.opcheck(_triton_op, (z, codebooks), test_utils=OPCHECK_UTILS)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_aot_autograd_gradient(backend):
    z, codebooks = make(16, 8, 2, 9, seed=11)
    upstream = torch.randn(16, 8)

    def loss(cb):
        return (lf.residual_quantize(z, cb, backend=backend)[1] * upstream).sum()

    grads = []
    for fn in (loss, torch.compile(loss, backend="aot_eager")):
        cb = codebooks.clone().requires_grad_(True)
        fn(cb).backward()
        grads.append(cb.grad)
    assert_close(grads[1], grads[0], what="aot_eager gradient")


@needs_native
def test_meta_shapes():
    codes, z_hat = torch.ops.letter_fast.residual_quantize(torch.empty(7, 5, device="meta"),
                                                           torch.empty(3, 4, 5, device="meta"))
    assert codes.shape == (7, 3) and codes.dtype == torch.int64 and z_hat.shape == (7, 5)


def test_torch_compile_runs_the_functional_api_with_a_graph_break():
    # fullgraph=False on purpose: the functional API rejects NaN/Inf inputs, a data-dependent
    # branch dynamo cannot trace, so the graph breaks there; the registered op itself traces whole
    # (next test).
    z, codebooks = make(20, 8, 2, 9)
    fn = torch.compile(lambda a, b: lf.residual_quantize(a, b)[1].sum(), backend="eager", fullgraph=False)
    assert_close(fn(z, codebooks), residual_quantize_reference(z, codebooks)[1].sum(), what="compiled sum")


@needs_native
def test_torch_compile_traces_through_the_registered_op():
    z, codebooks = make(20, 8, 2, 9)
    fn = torch.compile(lambda a, b: torch.ops.letter_fast.residual_quantize(a, b)[1].sum(), backend="eager",
                       fullgraph=True)
    assert_close(fn(z, codebooks), residual_quantize_reference(z, codebooks)[1].sum(), what="compiled sum")


# ---------------------------------------------------------------- GPU


@needs_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B,d,L,N", [(0, 32, 4, 256), (1, 1, 1, 1), (1000, 48, 3, 300), (65537, 128, 4, 256)])
def test_cuda_backends(backend, dtype, B, d, L, N):
    z, codebooks = make(B, d, L, N, dtype=dtype, device="cuda")
    check_backend(backend, z, codebooks)
