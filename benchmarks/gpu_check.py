"""GPU check: build the CUDA extension, check every GPU backend against the reference, time them.

Run on a CUDA machine from the repository root::

    python benchmarks/gpu_check.py                 # build in place, check, time (< 5 minutes)
    python benchmarks/gpu_check.py --no-build --out /some/dir

Residual quantization: the cuda and triton codes must match the float32 reference up
to float near-ties (checked like the unit tests), and are timed against the reference at
B = 1e6 and 1e7, d = 32 and 128 (N = 256, L = 4). Target on an H100: >= 5x the reference at
B >= 1e6 with identical codes. Other ops' benchmark modules contribute their own
``gpu_check(out_dir)``; each runs in turn and a failure in one does not hide the others
(LC-Rec decoding: benchmarks/bench_lcrec_decode.py, the shared-prompt decoder against HF ``generate`` with
SmolLM2-135M, identical beams then users/s of both).
Results (csv + md + png, with the card's name) go to ``--out``.

After the check, the GPU reproduction profiles (each sized for about 10 minutes on one H100/H200)::

    python benchmarks/repro_instruments.py --profile gpu          # LETTER-TIGER on the released identifiers
    python benchmarks/repro_instruments_lcrec.py --profile gpu    # LETTER-LC-Rec (SmolLM2-135M, seqrec)
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Benchmark modules that may define gpu_check(out_dir); missing ones are skipped.
OTHER_CHECKS = ["benchmarks.bench_contrastive_loss", "benchmarks.bench_trie", "benchmarks.bench_tiger_decode",
                "benchmarks.bench_lcrec_decode"]


def build() -> None:
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=f"{major}.{minor}", LETTER_FAST_FORCE_CUDA="1",
               MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 4)))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=ROOT, env=env, check=True)
    print(f"built letter_fast._C with CUDA for sm_{major}{minor} in {time.perf_counter() - t0:.0f} s", flush=True)


def check_residual_quantize(out_dir: Path) -> None:
    import torch

    import letter_fast as lf
    from benchmarks.bench_residual_quantize import inputs
    from benchmarks.harness import Case, append_markdown, run_cases
    from letter_fast.ops.reference import residual_quantize_reference
    from tests.tolerances import assert_valid_rq

    for B, d, dtype in [(1_000_000, 32, torch.float32), (1_000_000, 128, torch.float32), (200_000, 48, torch.bfloat16)]:
        z, cb = inputs(B, d, 4, 256, "cuda")
        z = z.to(dtype)
        ref_codes, _ = residual_quantize_reference(z, cb)
        for backend in ("cuda", "triton"):
            codes, z_hat = lf.residual_quantize(z, cb, backend=backend)
            assert_valid_rq(z.cpu(), cb.cpu(), codes.cpu(), z_hat.cpu(), ref_codes.cpu())
            same = (codes == ref_codes).all(1).float().mean().item()
            print(f"residual_quantize {backend} B={B} d={d} {dtype}: valid; rows identical to reference {same:.6%}",
                  flush=True)

    cases = []
    for d in (32, 128):
        for B in (1_000_000, 10_000_000):
            params = dict(B=B, d=d, N=256, L=4)

            def mk(fn, B=B, d=d):
                def make():
                    z, cb = inputs(B, d, 4, 256, "cuda")
                    return lambda: fn(z, cb)
                return make

            cases.append(Case("residual_quantize", "reference-matmul", params, mk(residual_quantize_reference), "cuda",
                              reference=True))
            for backend in ("cuda", "triton"):
                cases.append(Case("residual_quantize", f"letter_fast-{backend}", params,
                                  mk(lambda z, cb, b=backend: lf.residual_quantize(z, cb, backend=b)), "cuda"))
    rows = run_cases("gpu_residual_quantize", cases, warmup=2, repeat=10, min_seconds=0.2, plot_x="B", out_dir=out_dir)
    lines = ["## Target: >= 5x the reference at B >= 1e6 (H100)", ""]
    for r in rows:
        if r["impl"].startswith("letter_fast") and r["speedup_vs_reference"]:
            verdict = "meets" if r["speedup_vs_reference"] >= 5 else "MISSES"
            lines.append(f"- {r['impl']} {r['params']}: {r['speedup_vs_reference']:.1f}x ({verdict})")
    append_markdown("gpu_residual_quantize", "\n".join(lines), out_dir)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-build", action="store_true", help="use the extension already built")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; nothing to check", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__} CUDA {torch.version.cuda}", flush=True)
    if not args.no_build:
        build()
    from letter_fast import _native

    if not _native.has_native_cuda():
        print(f"gpu_check: CUDA kernels not loaded ({_native.LOAD_ERROR or 'built without CUDA'})", file=sys.stderr)
        return 1
    failures = 0
    checks = [("residual_quantize", check_residual_quantize)]
    for module in OTHER_CHECKS:
        try:
            fn = getattr(importlib.import_module(module), "gpu_check", None)
        except ImportError:
            fn = None
        if fn is not None:
            checks.append((module, fn))
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            fn(args.out)
            print(f"== {name}: ok ({time.perf_counter() - t0:.0f} s)", flush=True)
        except Exception:
            failures += 1
            traceback.print_exc()
            print(f"== {name}: FAILED", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
