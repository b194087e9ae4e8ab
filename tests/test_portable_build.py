"""The default native build runs on any x86-64 CPU and picks its kernel variant at run time.

csrc/cpu/isa compiles every CPU kernel for baseline x86-64, AVX2 and AVX-512 and chooses one at
the first call (``LETTER_FAST_CPU_ISA`` forces a lower one). These tests run the kernels once per
variant this CPU supports, each in its own process (the choice is fixed per process), and compare
every variant with the baseline; and they read the binary to check that AVX2 / AVX-512
instructions occur only inside the variants' own functions, so the code that runs before the
choice (op registration, argument checks, the pybind module) cannot die with an illegal
instruction on an older CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import NATIVE

pytestmark = pytest.mark.skipif(not NATIVE, reason="letter_fast._C is not built")

# Runs every CPU kernel on fixed inputs and prints the results as JSON (lists of numbers).
_KERNELS = r"""
import json, torch
import letter_fast._C as C
ops = torch.ops.letter_fast
g = torch.Generator().manual_seed(0)
out = {"isa": C.build_info()["cpu_simd"]}
z = torch.randn(37, 24, generator=g)
cb = torch.randn(3, 70, 24, generator=g)
codes, z_hat = ops.residual_quantize(z, cb)
out["rq_codes"], out["rq_zhat"] = codes.tolist(), z_hat.flatten().tolist()
a = torch.randn(19, 16, generator=g); c = torch.randn(45, 16, generator=g)
pos = torch.arange(19) * 2
loss, lse = ops.contrastive_loss_forward(a, c, pos, None, 0.1, True)
ga, gc = ops.contrastive_loss_backward(torch.ones(19), torch.zeros(19), a, c, pos, None, lse, 0.1,
                                       True, True, True)
out["cl"] = loss.tolist() + lse.tolist() + ga.flatten().tolist() + gc.flatten().tolist()
out["sinkhorn"] = ops.sinkhorn_assign(torch.rand(64, 8, generator=g), 0.05, 30, 10).tolist()
lp = torch.log_softmax(torch.randn(6, 9, generator=g), -1)
ptr = torch.tensor([0, 5], dtype=torch.int32); code = torch.tensor([0, 2, 3, 7, 8], dtype=torch.int32)
res = ops.trie_step(torch.zeros(6, dtype=torch.long), lp, torch.zeros(6), ptr, code, 3, 2)
out["trie"] = [t.flatten().tolist() for t in res]
qkv = [torch.randn(4, 3, 2, 8, generator=g), torch.randn(4, 3, 2, 8, generator=g)]
att = ops.beam_attention(qkv, torch.tensor([[0, 1, 2, 3]]), torch.zeros(2, 2))
out["attention"] = att.flatten().tolist()
print(json.dumps(out))
"""


def _run(isa: str | None, script: str = _KERNELS) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LETTER_FAST_CPU_ISA", None)
    if isa is not None:
        env["LETTER_FAST_CPU_ISA"] = isa
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


def _info() -> dict:
    import letter_fast._C as C

    return dict(C.build_info())


def test_build_info_reports_the_variants():
    info = _info()
    assert info["cpu_isa_built"][0] in ("baseline", "native")
    assert set(info["cpu_isa_supported"]) <= set(info["cpu_isa_built"])
    assert info["cpu_simd"] == info["cpu_isa_supported"][-1] or os.environ.get("LETTER_FAST_CPU_ISA")


def test_every_supported_variant_matches_the_baseline():
    supported = _info()["cpu_isa_supported"]
    results = {}
    for isa in supported:
        proc = _run(isa)
        assert proc.returncode == 0, f"LETTER_FAST_CPU_ISA={isa}: {proc.stderr[-2000:]}"
        results[isa] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert results[isa]["isa"] == isa
    base = results[supported[0]]
    for isa, got in results.items():
        # Discrete outputs are the same; values differ only by rounding (FMA contraction and the
        # vector width change the order of the float32 sums).
        for key in ("rq_codes", "sinkhorn"):
            assert got[key] == base[key], f"{isa}: {key} differs from {supported[0]}"
        assert got["trie"][:3] == base["trie"][:3], f"{isa}: trie_step picks differ"
        for key in ("rq_zhat", "cl", "attention"):
            diff = max(abs(x - y) for x, y in zip(got[key], base[key], strict=True))
            assert diff < 2e-5, f"{isa}: {key} differs from {supported[0]} by {diff}"
        diff = max(abs(x - y) for x, y in zip(got["trie"][3], base["trie"][3], strict=True))
        assert diff < 1e-6


def test_forcing_a_variant_this_build_lacks_says_why():
    proc = _run("avx1024")
    assert proc.returncode != 0
    assert "LETTER_FAST_CPU_ISA=avx1024 is not a kernel variant of this build" in proc.stderr
    assert "baseline" in proc.stderr


def test_forcing_a_variant_this_cpu_lacks_says_why():
    info = _info()
    missing = [isa for isa in info["cpu_isa_built"] if isa not in info["cpu_isa_supported"]]
    if not missing:
        pytest.skip("this CPU runs every variant of this build")
    proc = _run(missing[-1])
    assert proc.returncode != 0 and "this CPU runs only" in proc.stderr


def test_wide_vector_instructions_only_in_the_dispatched_variants():
    info = _info()
    if "avx2" not in info["cpu_isa_built"]:
        pytest.skip("not a multi-variant x86-64 build (LETTER_FAST_NATIVE_ARCH=1 or not x86-64)")
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    import letter_fast._C as C

    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", C.__file__], capture_output=True,
                             text=True, check=True).stdout
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    wide = re.compile(r"%[yz]mm\d|%k[1-7]\b")  # AVX/AVX2 ymm, AVX-512 zmm and mask registers
    variant = re.compile(r"letter_fast_isa_avx(2|512)::|cpu_isa::Kernels<\(letter_fast::cpu_isa::Isa\)[12]>")
    offenders, inside = set(), 0
    function = None
    for line in listing.splitlines():
        m = header.match(line)
        if m:
            function = m.group(1)
        elif function is not None and wide.search(line):
            if variant.search(function):
                inside += 1
            else:
                offenders.add(function)
    assert inside > 0, "no AVX2/AVX-512 code found at all: the variants were not compiled for their targets"
    assert not offenders, f"wide-vector instructions outside the dispatched variants: {sorted(offenders)[:10]}"
