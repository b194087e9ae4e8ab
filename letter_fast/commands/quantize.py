"""``letter-fast quantize``: residual-quantize embeddings with given codebooks.

Reads ``[V, d]`` embeddings and ``[L, N, d]`` codebooks (``.npy`` or torch files), writes the
``[V, L]`` codes. Without inputs it quantizes a synthetic batch and compares every backend that
runs here with the reference (a quick check of an installation).
"""

from __future__ import annotations

import argparse
import time

import torch

from letter_fast.io import load_tensor, save_tensor
from letter_fast.ops import backends, residual_quantize
from letter_fast.ops.reference import residual_quantize_reference


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("quantize", help="residual-quantize embeddings with given codebooks", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", help="[V, d] embeddings (.npy or torch file)")
    p.add_argument("--codebooks", help="[L, N, d] codebooks (.npy or torch file)")
    p.add_argument("--out", help="where to write the [V, L] int64 codes (.npy or torch file)")
    p.add_argument("--backend", default=None, help="auto (default) | reference | cpu | triton | cuda")
    p.add_argument("--device", default="cpu", help="torch device for the computation")
    p.add_argument("--synthetic", type=int, default=100_000, metavar="B",
                   help="rows of the synthetic check when no inputs are given (default 100000)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    if args.embeddings or args.codebooks:
        if not (args.embeddings and args.codebooks and args.out):
            raise ValueError("--embeddings, --codebooks and --out go together")
        z = load_tensor(args.embeddings, "embeddings").to(args.device)
        codebooks = load_tensor(args.codebooks, "codebooks").to(args.device)
        codes, _ = residual_quantize(z, codebooks, backend=args.backend)
        save_tensor(codes, args.out)
        print(f"wrote codes {tuple(codes.shape)} to {args.out}")
        return 0
    g = torch.Generator().manual_seed(0)
    z = torch.randn(args.synthetic, 32, generator=g).to(args.device)
    codebooks = (torch.randn(4, 256, 32, generator=g) * (0.5 ** torch.arange(4))[:, None, None]).to(args.device)
    print(f"synthetic check: B={args.synthetic}, d=32, L=4, N=256 on {args.device}")
    t0 = time.perf_counter()
    ref_codes, _ = residual_quantize_reference(z, codebooks)
    ref_s = time.perf_counter() - t0
    print(f"  {'reference':<10} {ref_s * 1e3:9.1f} ms")
    for name, why in backends.available(torch.device(args.device)).items():
        if name == "reference":
            continue
        if why is not None:
            print(f"  {name:<10} skipped: {why}")
            continue
        residual_quantize(z[:64], codebooks, backend=name)  # warm-up (Triton compiles here)
        t0 = time.perf_counter()
        codes, _ = residual_quantize(z, codebooks, backend=name)
        if z.is_cuda:
            torch.cuda.synchronize()
        s = time.perf_counter() - t0
        same = (codes == ref_codes).all(1).float().mean().item()
        print(f"  {name:<10} {s * 1e3:9.1f} ms  {ref_s / s:5.1f}x the reference  rows identical: {same:.4%}")
    return 0
