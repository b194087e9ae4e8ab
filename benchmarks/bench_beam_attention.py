"""Benchmark: beam-search decoder self-attention, the cpu kernel against the PyTorch reference.

One TIGER decoding step with beam search: ``users x beams`` rows, each with one new query and
the keys/values its ancestors wrote at the ``t`` earlier positions (6 heads of 64, the TIGER
decoder's shape). The ``reference`` gathers each row's ancestors' keys and values and calls
scaled-dot-product attention, as a key/value cache re-gathered through the beam parents does;
the ``cpu`` kernel follows the ancestor index instead. Both in the same run at the same sizes;
the note gives the largest difference to the reference. Sizes are modest because the benchmark
machine is shared. Usage::

    python benchmarks/bench_beam_attention.py            # users 32 .. 256, t = 1 and 4
    python benchmarks/bench_beam_attention.py --quick    # a smoke run at small sizes
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Case, append_markdown, quick_args, run_cases, shared_machine_note  # noqa: E402
from letter_fast.ops import backends, beam_attention, extend_ancestors  # noqa: E402
from letter_fast.ops.reference import beam_attention_reference  # noqa: E402

NAME = "beam_attention"


def history(t: int, users: int, beams: int, heads: int = 6, d_kv: int = 64, seed: int = 0):
    """Projections of steps 0..t (step 0: one row per user) and the ancestors of the rows of step t."""
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(users, 3, heads, d_kv, generator=g)]
    anc = torch.empty(0, users, dtype=torch.long)
    for _ in range(t):
        rows = users * beams
        parent = torch.randint(0, qkv[-1].shape[0], (rows,), generator=g)
        anc = extend_ancestors(anc, parent)
        qkv.append(torch.randn(rows, 3, heads, d_kv, generator=g))
    return qkv, anc, torch.randn(heads, t + 1, generator=g)


def cases(sizes, beams: int = 20) -> list[Case]:
    out = []
    cpu_why = backends.reason(NAME, "cpu", torch.device("cpu"))
    for users, t in sizes:
        params = dict(rows=users * beams, t=t, H=6, d_kv=64)
        qkv, anc, bias = history(t, users, beams, seed=users + t)
        out.append(Case(NAME, "reference", params,
                        lambda qkv=qkv, anc=anc, bias=bias: lambda: beam_attention_reference(qkv, anc, bias),
                        reference=True))
        if cpu_why is None:
            err = float((beam_attention(qkv, anc, bias, backend="cpu") - beam_attention_reference(qkv, anc, bias))
                        .abs().max())
            out.append(Case(NAME, "letter_fast-cpu", params,
                            lambda qkv=qkv, anc=anc, bias=bias: lambda: beam_attention(qkv, anc, bias, backend="cpu"),
                            note=f"max diff {err:.2g}"))
        else:
            print(f"{NAME}: the cpu backend does not run here: {cpu_why}", file=sys.stderr)
    return out


def main(argv=None) -> None:
    args = quick_args(__doc__, argv)
    sizes = [(8, 1), (8, 4)] if args.quick else [(users, t) for t in (1, 4) for users in (32, 128, 256)]
    run_cases(NAME, cases(sizes), repeat=3 if args.quick else 9, min_seconds=0.05 if args.quick else 0.3,
              plot_x="rows", out_dir=args.out)
    note = shared_machine_note("benchmarks/bench_beam_attention.py", args.quick, sizes="at most 5120 rows, beams = 20")
    append_markdown(NAME, note, args.out)

if __name__ == "__main__":
    main()
