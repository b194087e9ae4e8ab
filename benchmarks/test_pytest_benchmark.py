"""pytest-benchmark entry points, for users who track regressions with it::

    pytest benchmarks/test_pytest_benchmark.py --benchmark-only --benchmark-compare

One moderate size per op and backend; the full grids with peers and memory live in the
bench_*.py scripts (benchmarks/harness.py). Not part of the unit-test run (testpaths = tests).
"""

import pytest
import torch

import letter_fast as lf
from letter_fast.ops import backends
from letter_fast.ops.reference import residual_quantize_reference

CPU_FAST = [b for b, why in backends.available(torch.device("cpu")).items() if why is None and b != "reference"]


@pytest.fixture(scope="module")
def residual_quantize_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(50_000, 32, generator=g), torch.randn(4, 256, 32, generator=g)


def test_residual_quantize_reference(benchmark, residual_quantize_inputs):
    benchmark.group = "residual_quantize B=5e4 d=32 N=256 L=4"
    benchmark(residual_quantize_reference, *residual_quantize_inputs)


@pytest.mark.parametrize("backend", CPU_FAST)
def test_residual_quantize(benchmark, residual_quantize_inputs, backend):
    benchmark.group = "residual_quantize B=5e4 d=32 N=256 L=4"
    benchmark(lambda: lf.residual_quantize(*residual_quantize_inputs, backend=backend))
