"""Shared test setup.

Triton kernels run on CPU tensors through Triton's interpreter, which must be switched on before
any kernel is decorated; letter_fast imports its Triton modules lazily, so setting it here (as
.ci/run does too) is early enough.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from letter_fast.ops import backends  # noqa: E402


def runnable_backends(device: str = "cpu") -> list[str]:
    dev = torch.device(device)
    return [b for b, why in backends.available(dev).items() if why is None]


CPU_BACKENDS = runnable_backends("cpu")
FAST_CPU_BACKENDS = [b for b in CPU_BACKENDS if b != "reference"]
NATIVE = "cpu" in CPU_BACKENDS
HAS_CUDA = torch.cuda.is_available()

needs_native = pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")


def pytest_report_header(config):
    return f"letter_fast backends runnable on CPU here: {', '.join(CPU_BACKENDS)}; CUDA GPU: {HAS_CUDA}"
