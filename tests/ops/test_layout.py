"""The package's shape: one layout per op family, ops that import no model package, no import cycles."""

import ast
import subprocess
import sys
from pathlib import Path

import letter_fast
from letter_fast.ops import backends

PACKAGE = Path(letter_fast.__file__).resolve().parent
ROOT = PACKAGE.parent
MODEL_PACKAGES = ("letter_fast.genrec", "letter_fast.tokenizer", "letter_fast.cf")
FAMILIES = ("residual_quantize", "contrastive_loss", "trie", "sinkhorn_assign", "beam_attention")
TRITON_FAMILIES = ("residual_quantize", "contrastive_loss", "trie")
CUDA_FAMILIES = ("residual_quantize", "contrastive_loss", "trie")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports, at import time or inside its functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()

    def add(target: str) -> None:
        while target and target not in known:  # `from a.b import c` where c is not a module
            target = target.rpartition(".")[0]
        if target:
            out.add(target)

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)

    # Imports inside functions count too: a deferred import that closes a loop (a -> b at import
    # time, b -> a when called) is a cycle hidden from the import system, not an absent one.
    visit(ast.walk(tree))
    # importing a module always initializes its parent packages first: no cycle through them
    return {m for m in out if m.startswith("letter_fast") and not name.startswith(m + ".") and m != name}


def test_every_family_has_its_files():
    missing = []
    for op in FAMILIES:
        files = [f"letter_fast/ops/{op}.py", f"letter_fast/ops/reference/{op}.py", f"csrc/cpu/{op}.cpp",
                 f"csrc/cpu/{op}_kernel.h", f"tests/ops/test_{op}.py", f"csrc/tests/test_{op}.cpp",
                 f"benchmarks/bench_{op}.py"]
        if op in TRITON_FAMILIES:
            files.append(f"letter_fast/ops/triton/{op}.py")
        if op in CUDA_FAMILIES:
            files += [f"csrc/cuda/{op}_cuda.cpp", f"csrc/cuda/{op}_kernel.cu"]
        missing += [f for f in files if not (ROOT / f).is_file()]
    assert not missing, f"op family files missing: {missing}"
    # and nothing else: every op module belongs to a family
    stray = sorted(p.stem for p in (PACKAGE / "ops").glob("*.py")
                   if p.stem not in FAMILIES + ("__init__", "backends", "checks"))
    assert not stray, f"modules under letter_fast/ops that are no op family: {stray}"


def test_every_backend_table_op_belongs_to_a_family():
    for op in backends.OPS:
        assert any(op == f or op.startswith(f + "_") for f in FAMILIES), op


def test_ops_import_no_model_package():
    modules = _modules()
    known = set(modules)
    bad = {}
    for name, path in modules.items():
        if name.startswith("letter_fast.ops"):
            # every import, also those inside functions
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            hit = [m for m in names if m.startswith(MODEL_PACKAGES)]
            if hit:
                bad[name] = hit
    assert not bad, f"ops modules that import model packages: {bad}"
    assert known  # the walk found the package


def test_no_import_cycles():
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(path, name, known) for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_and_ops_pull_in_no_model_package():
    # a fresh interpreter: import all of letter_fast.ops first and look at sys.modules, then every module
    names = sorted(_modules())
    ops = [n for n in names if n.startswith("letter_fast.ops")]
    script = (
        "import importlib, sys\n"
        f"for name in {ops!r}:\n"
        "    importlib.import_module(name)\n"
        f"leaked = sorted(m for m in sys.modules if m.startswith({MODEL_PACKAGES!r}))\n"
        "assert not leaked, f'importing letter_fast.ops imported {leaked}'\n"
        f"for name in {names!r}:\n"
        "    if name == 'letter_fast.__main__':\n"
        "        continue\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    env_cmd = [sys.executable, "-c", script]
    done = subprocess.run(env_cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
