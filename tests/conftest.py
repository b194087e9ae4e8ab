"""Shared test setup.

Triton kernels run on CPU tensors through Triton's interpreter, which must be switched on before
any kernel is decorated; letter_fast imports its Triton modules lazily, so setting it here (as
.ci/run does too) is early enough.

Hypothesis profiles: "ci" is derandomized (the examples are a fixed function of each test, so a
CI run on a fresh clone either always passes or always fails) and prints the blob that
reproduces a failure; it is chosen when the environment variable CI is set (CI services set
CI=true) or by HYPOTHESIS_PROFILE=ci. "dev", the default elsewhere, draws new random examples on
every run, which keeps finding new cases, and also prints the reproduction blob.

Markers (registered in pyproject.toml): ``gpu`` on every test that needs a CUDA GPU (``needs_cuda``
carries it, so ``-m "not gpu"`` deselects them), ``slow`` on tests that take over 10 s on an idle
2-core machine (``-m "not slow"`` for a quick run).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from letter_fast.ops import backends  # noqa: E402


def runnable_backends(device: str = "cpu") -> list[str]:
    dev = torch.device(device)
    return [b for b, why in backends.available(dev).items() if why is None]


CPU_BACKENDS = runnable_backends("cpu")
FAST_CPU_BACKENDS = [b for b in CPU_BACKENDS if b != "reference"]
NATIVE = "cpu" in CPU_BACKENDS
HAS_CUDA = torch.cuda.is_available()

needs_native = pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")
_skip_without_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")


def needs_cuda(test):
    """Marks a test ``gpu`` and skips it where no CUDA GPU is present."""
    return pytest.mark.gpu(_skip_without_cuda(test))


settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_report_header(config):
    return (f"letter_fast backends runnable on CPU here: {', '.join(CPU_BACKENDS)}; CUDA GPU: {HAS_CUDA}; "
            f"hypothesis profile: {HYPOTHESIS_PROFILE}")
