"""Benchmark: fused contrastive loss (forward + backward) against the PyTorch reference.

The in-batch setting of LETTER's L_CF: anchors and candidates [B, d] with M = B, positives =
arange(B), mean reduction, gradients for both inputs. At each size:

* ``reference``            the library's reference backend: [B, B] logits + F.cross_entropy
* ``letter_fast-<backend>`` every other letter_fast backend that runs here

The reference is not run where its [B, B] float32 logits alone would exceed ``--reference-limit-gb``
(default 8 GB): that row is recorded as failed with the reason, so the machine is never pushed
into swap or the OOM killer.

Targets: on this CPU at least 1.5x faster than the reference at B = 16384, and runs at
B = 65536 in O(B d) memory; on an H100 (``gpu_check``) at least 8x faster and 100x less memory
than the reference at B = 16384. Usage::

    python benchmarks/bench_contrastive_loss.py            # the full grid (~6 min on 2 cores)
    python benchmarks/bench_contrastive_loss.py --quick    # a smoke run at small sizes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import letter_fast as lf  # noqa: E402
from benchmarks.harness import RESULTS, Case, append_markdown, run_cases  # noqa: E402
from letter_fast.ops import backends  # noqa: E402

NAME = "contrastive_loss"
REFERENCE_LIMIT_GB = 8.0


def inputs(B, d, device="cpu", seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # Scaled like trained embeddings: logits O(1).
    anchors = torch.randn(B, d, generator=g) * d ** -0.25
    candidates = torch.randn(B, d, generator=g) * d ** -0.25
    return anchors.to(device, dtype), candidates.to(device, dtype)


def step_factory(B, d, backend, device, dtype=torch.float32):
    """make(): inputs (untimed), then a callable doing forward + backward once."""

    def make():
        a, c = inputs(B, d, device, dtype=dtype)
        a.requires_grad_(True)
        c.requires_grad_(True)

        def step():
            a.grad = c.grad = None
            loss = lf.contrastive_loss(a, c, backend=backend)
            loss.backward()
            return loss.detach()

        return step

    return make


def refused(reason: str):
    def make():
        raise MemoryError(reason)

    return make


def cases(sizes, device="cpu", reference_limit_gb=REFERENCE_LIMIT_GB, dtype=torch.float32, single_call_from=65536):
    out = []
    ours = [b for b, why in backends.available(torch.device(device)).items() if why is None and b != "reference"]
    for d in sorted({d for _, d in sizes}):
        for B in sorted(B for B, dd in sizes if dd == d):
            params = dict(B=B, d=d)
            # One timed call at the largest sizes (each takes minutes on 2 cores).
            once = dict(warmup=0, repeat=1) if B >= single_call_from else {}
            logits_gb = B * B * 4 / 1e9
            if logits_gb > reference_limit_gb:
                note = (f"not run: its [B, B] float32 logits alone need {logits_gb:.0f} GB "
                        f"(> {reference_limit_gb:g} GB guard)")
                out.append(Case(NAME, "reference", params, refused(note), device, reference=True))
            else:
                out.append(Case(NAME, "reference", params, step_factory(B, d, "reference", device, dtype), device,
                                reference=True, **once))
            for b in ours:
                out.append(Case(NAME, f"letter_fast-{b}", params, step_factory(B, d, b, device, dtype), device, **once))
    return out


def target_check(rows, speed_target: float, memory_target: float, at_B: int, title: str) -> str:
    lines = [f"## Target check ({title}): forward + backward, letter_fast vs the reference", "",
             f"Targets: >= {speed_target:g}x faster than the reference at B = {at_B}"
             + (f", >= {memory_target:g}x less peak extra memory" if memory_target else "")
             + "; at every size the extra memory should stay O(B d) "
               "(column: multiple of one [B, d] float32 matrix).", "",
             "| params | impl | ms | speedup | peak extra MB (ours / reference) | memory ratio "
             "| ours / (B d 4 bytes) | target |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if not row["impl"].startswith("letter_fast-"):
            continue
        ref = next((r for r in rows if r["_group"] == row["_group"] and r["_reference"]), None)
        params = dict(kv.split("=") for kv in row["params"].split())
        B, d = int(params["B"]), int(params["d"])
        if row["median_ms"] is None:
            lines.append(f"| {row['params']} | {row['impl']} | failed | — | — | — | — | {row['note']} |")
            continue
        speed = row["speedup_vs_reference"]
        ours_mb, ref_mb = row["peak_extra_mb"], ref["peak_extra_mb"] if ref else None
        mem_ratio = (ref_mb / ours_mb) if ref_mb and ours_mb else None
        linear = (ours_mb * 2**20 / (B * d * 4)) if ours_mb is not None else None
        verdict = ""
        if B == at_B:
            ok = speed is not None and speed >= speed_target
            if memory_target:
                ok = ok and mem_ratio is not None and mem_ratio >= memory_target
            verdict = "met" if ok else "NOT met"
        elif ref and ref["median_ms"] is None:
            verdict = "runs where the reference does not"
        fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"| {row['params']} | {row['impl']} | {row['median_ms']:.1f} | {fmt(speed, '.2f')} | "
                     f"{fmt(ours_mb, '.1f')} / {fmt(ref_mb, '.1f')} | {fmt(mem_ratio, '.0f')} | "
                     f"{fmt(linear, '.1f')} | {verdict} |")
    return "\n".join(lines)


def _check_backend_on_gpu(backend: str, B: int, M: int, d: int, exclude: bool, normalize: bool, tau: float,
                          dtype: torch.dtype) -> None:
    """Loss and both gradients of ``backend`` against the float64 reference on the GPU; raises."""
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(B + M + d)
    a = (torch.randn(B, d, generator=g) * d ** -0.25).to(dev, dtype)
    c = (torch.randn(M, d, generator=g) * d ** -0.25).to(dev, dtype)
    p = torch.randint(0, M, (B,), generator=g).to(dev)
    x = ((p + torch.randint(1, M, (B,), generator=g).to(dev)) % M) if exclude else None
    upstream = torch.randn(B, generator=g).to(dev)
    results = []
    for name, aa, cc in ((backend, a, c), ("reference", a.double(), c.double())):
        aa, cc = aa.clone().requires_grad_(True), cc.clone().requires_grad_(True)
        rows = lf.contrastive_loss(aa, cc, p, x, temperature=tau, normalize=normalize, reduction="none", backend=name)
        (rows * upstream.to(rows.dtype)).sum().backward()
        results.append((rows.detach().double(), aa.grad.double(), cc.grad.double()))
    tol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    for what, got, want in zip(("loss", "grad anchors", "grad candidates"), *results):
        scale = max(1.0, float(want.abs().max()))
        err = float((got - want).abs().max()) / scale
        if not err <= tol:
            raise AssertionError(f"gpu_check {NAME}: {backend} {what} off by {err:.3g} (relative to max, tol {tol}) "
                                 f"at B={B} M={M} d={d} exclude={exclude} normalize={normalize} tau={tau} {dtype}")


def gpu_check(out_dir: Path) -> None:
    """On a CUDA machine: check the cuda and triton backends, then time them against the targets."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"gpu_check {NAME}: no CUDA GPU visible")
    gpu_backends = [b for b in ("cuda", "triton")
                    if backends.reason("contrastive_loss", b, torch.device("cuda")) is None]
    if not gpu_backends:
        raise RuntimeError(f"gpu_check {NAME}: neither the cuda nor the triton backend runs here: "
                           f"{backends.available(torch.device('cuda'))}")
    for backend in gpu_backends:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for B, M, d, exclude, normalize, tau in [(1, 2, 1, True, False, 1.0),
                                                     (1000, 777, 100, True, False, 0.5),
                                                     (4097, 4097, 128, True, True, 0.1),
                                                     (16384, 16384, 32, False, False, 1.0)]:
                _check_backend_on_gpu(backend, B, M, d, exclude, normalize, tau, dtype)
        print(f"gpu_check {NAME}: {backend} matches the reference", flush=True)
    sizes = [(B, d) for d in (32, 128) for B in (4096, 16384, 65536)]
    rows = run_cases(f"{NAME}_gpu", cases(sizes, "cuda", reference_limit_gb=40.0, single_call_from=10**9),
                     warmup=2, repeat=10, min_seconds=0.5, plot_x="B", out_dir=out_dir)
    summary = target_check(rows, speed_target=8.0, memory_target=100.0, at_B=16384, title="GPU")
    append_markdown(f"{NAME}_gpu", summary, out_dir)
    print(summary)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--name", default=NAME, help="results file stem")
    parser.add_argument("--reference-limit-gb", type=float, default=REFERENCE_LIMIT_GB,
                        help="skip the reference where its [B, B] float32 logits exceed this")
    args = parser.parse_args(argv)
    sizes = [(B, d) for d in (32, 128) for B in ((256, 1024) if args.quick else (1024, 4096, 16384, 65536))]
    rows = run_cases(args.name, cases(sizes, args.device, args.reference_limit_gb),
                     warmup=1, repeat=3, min_seconds=0.05 if args.quick else 0.5, plot_x="B", out_dir=args.out)
    summary = target_check(rows, speed_target=1.5, memory_target=0.0, at_B=1024 if args.quick else 16384,
                           title=f"{args.device}, {torch.get_num_threads()} threads")
    append_markdown(args.name, summary, args.out)
    print(summary)


if __name__ == "__main__":
    main()
