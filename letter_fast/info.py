"""``python -m letter_fast.info``: what this installation built and which backends run here.

Prints the backend table of :mod:`letter_fast.ops.backends`: for every op and each backend it
has, per device, whether it is built, whether it runs here (and why not), and which kernels are
not deterministic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

import letter_fast
from letter_fast import _native
from letter_fast.ops import backends


def collect() -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return {
        "letter_fast": letter_fast.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "triton": triton_version,
        "triton_interpret": backends.triton_interpreting(),
        "native_extension": _native.build_info() or None,
        "native_load_error": _native.LOAD_ERROR,
        "backend_env": os.environ.get(backends.ENV_VAR),
        "backends": {str(dev): backends.available(dev) for dev in devices},
        # every device type, visible or not: which backends each op has there is worth knowing either way
        "ops": {str(dev): backends.table(dev) for dev in (torch.device("cpu"), torch.device("cuda"))},
        "nondeterministic": {op: {"backends": names, "why": why}
                             for op, names, why in backends.nondeterministic_notes()},
    }


def render(info: dict) -> str:
    lines = [f"letter_fast {info['letter_fast']}  (python {info['python']}, {info['platform']})"]
    lines.append(f"torch {info['torch']}  CUDA runtime: {info['torch_cuda'] or 'none (CPU build)'}"
                 f"  GPU: {info['gpu'] or 'none visible'}")
    lines.append(f"triton {info['triton'] or 'not installed'}"
                 + ("  (interpreter on: TRITON_INTERPRET=1)" if info["triton_interpret"] else ""))
    native = info["native_extension"]
    if native:
        built = "CPU" + (" + CUDA" if native.get("cuda") else "")
        lines.append(f"native extension letter_fast._C: built for {built}; OpenMP {native.get('openmp')} "
                     f"({native.get('openmp_max_threads')} threads); CPU kernels {native.get('cpu_simd')} "
                     f"(built: {', '.join(native.get('cpu_isa_built', []))}; LETTER_FAST_CPU_ISA forces one"
                     f"{'; ' + native['cpu_isa_error'] if native.get('cpu_isa_error') else ''}); "
                     f"flags {native.get('cxx_flags')}")
    else:
        lines.append(f"native extension letter_fast._C: not loaded ({info['native_load_error']})")
    if info["backend_env"]:
        lines.append(f"LETTER_FAST_BACKEND={info['backend_env']}")
    for device, table in info["backends"].items():
        lines.append(f"backends for {device} tensors:")
        for name, why in table.items():
            lines.append(f"  {name:<10} {'runs' if why is None else 'no: ' + why}")
    native_error = info["native_load_error"]
    for device, ops in info["ops"].items():
        lines.append(f"ops on {device} tensors (built / runs here / why not):")
        width = max(len(op) for op in ops)
        for op, row in ops.items():
            for i, (name, cell) in enumerate(row.items()):
                head = op if i == 0 else ""
                state = f"{'built' if cell['built'] else 'not built':<9} {'runs' if cell['runs'] else 'no'}"
                why = cell["why"] or ""
                if native_error and native_error in why:  # said once above, not in every row
                    why = "letter_fast._C is not loaded (see above)"
                lines.append(f"  {head:<{width}}  {name:<10} {state}" + (f"  ({why})" if why else ""))
    lines.append("determinism (from reading the kernels; atomics in a reduction make a kernel non-deterministic):")
    notes = backends.nondeterministic_notes()
    if notes:
        for op, names, why in notes:
            lines.append(f"  {op} [{', '.join(names)}] on CUDA tensors: {why}")
        lines.append("  every other op and backend is deterministic")
    else:
        lines.append("  every op and backend is deterministic")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m letter_fast.info", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else render(info))


if __name__ == "__main__":
    main()
