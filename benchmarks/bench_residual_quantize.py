"""Benchmark: fused residual quantization against the PyTorch reference and the usual peers.

Compared at each size (N = 256 codes, L = 4 levels, float32, all threads of this machine):

* ``reference-matmul``  the library's reference backend: ||r||^2 - 2 r e^T + ||e||^2, argmin
* ``reference-cdist``   the same loop with torch.cdist
* ``faiss-rq-greedy``   faiss ResidualQuantizer, max_beam_size = 1, codebooks set to ours
* ``vqtorch-residualvq`` vector-quantize-pytorch ResidualVQ (eval mode), codebooks set to ours
* ``letter_fast-<backend>`` every letter_fast backend that runs here (not the reference)

Target: letter_fast >= 4x faster than the fastest of the others at B = 1e5..1e6,
d = 32, with extra memory O(B (d + L)). Usage::

    python benchmarks/bench_residual_quantize.py            # the full grid (a few minutes)
    python benchmarks/bench_residual_quantize.py --quick    # a smoke run at small sizes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import letter_fast as lf  # noqa: E402
from benchmarks.harness import RESULTS, Case, append_markdown, fastest, run_cases  # noqa: E402
from letter_fast.ops import backends  # noqa: E402
from letter_fast.ops.reference import residual_quantize_reference  # noqa: E402

NAME = "residual_quantize"


def inputs(B, d, L, N, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, d, generator=g)
    codebooks = torch.randn(L, N, d, generator=g) * (0.5 ** torch.arange(L))[:, None, None]
    return z.to(device), codebooks.to(device)


def faiss_case(z, codebooks):
    import faiss
    import numpy as np

    L, N, d = codebooks.shape
    if N != 256:
        raise ValueError("faiss RQ with 8-bit codes needs N = 256")
    rq = faiss.ResidualQuantizer(d, L, 8)
    rq.max_beam_size = 1
    faiss.copy_array_to_vector(codebooks.numpy().astype(np.float32).ravel(), rq.codebooks)
    rq.is_trained = True
    x = z.numpy()
    return lambda: rq.compute_codes(x)


def vqtorch_case(z, codebooks):
    from vector_quantize_pytorch import ResidualVQ

    L, N, d = codebooks.shape
    rvq = ResidualVQ(dim=d, num_quantizers=L, codebook_size=N, kmeans_init=False).eval()
    with torch.no_grad():
        for level, layer in enumerate(rvq.layers):
            layer._codebook.embed.copy_(codebooks[level][None])
    x = z[None]

    def run():
        with torch.no_grad():
            return rvq(x)[1]

    return run


def cases(sizes, device="cpu", peers=True):
    out = []
    ours = [b for b, why in backends.available(torch.device(device)).items() if why is None and b != "reference"]
    for B, d in sizes:
        params = dict(B=B, d=d, N=256, L=4)
        # At a million rows a call takes seconds (tens for the slowest peer): the memory probe is
        # the warm-up, three timed calls give the median.
        heavy = dict(warmup=0, repeat=3) if B >= 1_000_000 else {}

        def mk(fn, B=B, d=d):
            def make():
                z, cb = inputs(B, d, 4, 256, device)
                return fn(z, cb)
            return make

        out.append(Case(NAME, "reference-matmul", params, mk(lambda z, cb: lambda: residual_quantize_reference(z, cb)),
                        device, reference=True, **heavy))
        out.append(Case(NAME, "reference-cdist", params,
                        mk(lambda z, cb: lambda: residual_quantize_reference(z, cb, "cdist")), device, **heavy))
        if peers and device == "cpu":
            out.append(Case(NAME, "faiss-rq-greedy", params, mk(faiss_case), device, **heavy))
            out.append(Case(NAME, "vqtorch-residualvq", params, mk(vqtorch_case), device, **heavy))
        for b in ours:
            out.append(Case(NAME, f"letter_fast-{b}", params,
                            mk(lambda z, cb, b=b: lambda: lf.residual_quantize(z, cb, backend=b)), device, **heavy))
    return out


def target_check(rows) -> str:
    others = {"reference-matmul", "reference-cdist", "faiss-rq-greedy", "vqtorch-residualvq"}
    lines = ["## Target check: letter_fast vs the fastest other implementation", "",
             "| params | fastest other | its ms | letter_fast backend | ms | ratio | extra MB (ours / reference) |",
             "|---|---|---:|---|---:|---:|---:|"]
    for group in dict.fromkeys(r["_group"] for r in rows):
        other = fastest(rows, group, others)
        ours = fastest(rows, group, {r["impl"] for r in rows if r["impl"].startswith("letter_fast-")})
        ref = next((r for r in rows if r["_group"] == group and r["impl"] == "reference-matmul"), None)
        if not (other and ours):
            continue
        measured = ref and ref["peak_extra_mb"] is not None and ours["peak_extra_mb"] is not None
        mem = f"{ours['peak_extra_mb']:.1f} / {ref['peak_extra_mb']:.1f}" if measured else "—"
        lines.append(f"| {ours['params']} | {other['impl']} | {other['median_ms']:.2f} | {ours['impl']} | "
                     f"{ours['median_ms']:.2f} | {other['median_ms'] / ours['median_ms']:.2f}x | {mem} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--name", default=NAME, help="results file stem")
    args = parser.parse_args(argv)
    sizes = ([(2000, 32), (2000, 128)] if args.quick
             else [(B, d) for d in (32, 128) for B in (10_000, 100_000, 1_000_000)])
    rows = run_cases(args.name, cases(sizes, args.device), repeat=3 if args.quick else 5,
                     min_seconds=0.05 if args.quick else 0.5, plot_x="B", out_dir=args.out)
    summary = target_check(rows)
    append_markdown(args.name, summary, args.out)
    print(summary)


if __name__ == "__main__":
    main()
