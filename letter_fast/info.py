"""``python -m letter_fast.info``: what this installation built and which backends run here."""

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
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m letter_fast.info", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else render(info))


if __name__ == "__main__":
    main()
