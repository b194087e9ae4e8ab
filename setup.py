"""Build of letter_fast's native extension ``letter_fast._C``.

Build against the torch that is already installed: ``pip install --no-build-isolation .``
(pip's isolated build would fetch a separate, multi-GB torch only to compile against it).

Environment flags (all optional):

==============================  ===========================================================
``LETTER_FAST_SKIP_NATIVE=1``   no native code at all: a pure-Python install (reference and
                                Triton backends only)
``LETTER_FAST_FORCE_CUDA=1``    build the CUDA kernels even where no GPU is visible (needs a
                                CUDA toolkit and a CUDA build of torch)
``LETTER_FAST_SKIP_CUDA=1``     never build the CUDA kernels
``LETTER_FAST_NATIVE_ARCH=1``   compile everything with ``-march=native`` (a binary for this
                                machine's CPU only; the default build runs on any x86-64 or
                                arm64 CPU and picks its AVX2 / AVX-512 kernels at run time)
``TORCH_CUDA_ARCH_LIST``        CUDA architectures, torch's own variable (e.g. ``"9.0"``)
``MAX_JOBS``                    parallel compile jobs, torch's own variable
==============================  ===========================================================
"""

import glob
import os
import platform

from setuptools import setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _extensions():
    if _flag("LETTER_FAST_SKIP_NATIVE"):
        print("letter_fast: LETTER_FAST_SKIP_NATIVE set, building no native code")
        return [], {}
    import torch
    from torch.utils import cpp_extension

    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    if _flag("LETTER_FAST_NATIVE_ARCH"):
        # Opt-in: this machine's instruction set everywhere; csrc/cpu/isa builds one variant.
        cxx += ["-march=native", "-DLETTER_FAST_NATIVE_ARCH"]
        if platform.machine().lower() in ("x86_64", "amd64"):
            # 512-bit vectors where AVX-512 exists: csrc/cpu/*_kernel.h size their register tiles
            # for 32 zmm registers (GCC otherwise prefers 256-bit on these cores).
            cxx.append("-mprefer-vector-width=512")
    # Default: the baseline instruction set (x86-64 / arm64) for everything, and on x86-64 two more
    # copies of the CPU kernels for AVX2 and AVX-512 that csrc/cpu/isa/dispatch.h picks at run time.
    sources = ["csrc/letter_fast.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp")) + sorted(glob.glob("csrc/cpu/isa/*.cpp"))

    cuda_toolkit = cpp_extension.CUDA_HOME is not None
    want_cuda = not _flag("LETTER_FAST_SKIP_CUDA") and (
        _flag("LETTER_FAST_FORCE_CUDA") or (torch.cuda.is_available() and cuda_toolkit)
    )
    if want_cuda and (torch.version.cuda is None or not cuda_toolkit):
        raise RuntimeError(
            "letter_fast: a CUDA build was requested but "
            + ("this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA toolkit (nvcc) was found")
            + "; unset LETTER_FAST_FORCE_CUDA or install a CUDA torch and toolkit"
        )
    define = [("LETTER_FAST_CXX_FLAGS", f'"{" ".join(cxx)}"')]
    if want_cuda:
        define.append(("LETTER_FAST_WITH_CUDA", None))
        sources += sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("csrc/cuda/*.cu"))
        ext = cpp_extension.CUDAExtension(
            "letter_fast._C",
            sources,
            define_macros=define,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "letter_fast._C", sources, define_macros=define, extra_compile_args=cxx, extra_link_args=["-fopenmp"]
        )
    print(f"letter_fast: building native extension ({'CPU + CUDA' if want_cuda else 'CPU only'})")
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
