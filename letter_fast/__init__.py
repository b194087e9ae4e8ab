"""letter_fast: kernel-backed learnable item tokenization (LETTER) and generative recommendation.

The hot paths (residual quantization, contrastive losses, trie-constrained beam search) have a
plain PyTorch reference backend plus C++ (CPU), Triton and CUDA kernels; ``backend=`` or
``LETTER_FAST_BACKEND`` picks one, ``python -m letter_fast.info`` says which run here.

The ops are importable from here (``letter_fast.residual_quantize``); the subpackages load on first
use, as in numpy or torch: ``import letter_fast as lf; lf.genrec.ItemIndex``, ``lf.tokenizer``,
``lf.data``, ``lf.cf``, ``lf.nn``, ``lf.training``, ``lf.pipeline.run_pipeline(...)``. Importing
``letter_fast`` itself loads torch and the ops only (no transformers, no model code).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from letter_fast import ops
from letter_fast.ops import *  # noqa: F403  (the ops' public names, as letter_fast.ops.__all__ lists them)

# Loaded on first attribute access (PEP 562): importing them eagerly would pull in transformers, matplotlib and
# the model code for users who only want the ops.
_SUBMODULES = ("cf", "config", "data", "genrec", "info", "io", "metrics", "nn", "pipeline", "tokenizer", "training")

# ``from letter_fast import *`` gives the ops (the subpackages are reached as attributes, not star-imported)
__all__ = [*ops.__all__, "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        try:
            # import_module also sets the attribute on this package, so __getattr__ runs once per name
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the subpackage exists but one of its own imports is missing: say which
            raise AttributeError(f"module {__name__!r} has no attribute {name!r} (no {exc.name} in this "
                                 "installation)") from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
