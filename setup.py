"""Builds erda_sparse and its native kernels against the PyTorch already installed.

    pip install --no-build-isolation .

CPU kernels are always built. The CUDA kernels are built when this torch is a CUDA build and a CUDA
toolkit (nvcc) is found; ERDA_CUDA=1 requires them (the build fails otherwise), ERDA_CUDA=0 skips them.
TORCH_CUDA_ARCH_LIST picks the GPU architectures (default: 8.0 and 9.0).
"""
import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - reached only in a bad build environment
    sys.exit(
        "erda_sparse builds its kernels against the installed PyTorch, which this build cannot import.\n"
        "Install torch first (e.g. `pip install torch==2.13.0`), then build without isolation:\n"
        "    pip install --no-build-isolation .\n"
        "or run `bash scripts/install.sh`, which does all of it."
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    forced = os.environ.get("ERDA_CUDA", "").strip()
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if forced == "0":
        return False
    if forced == "1":
        if not possible:
            sys.exit(
                "ERDA_CUDA=1 but the CUDA kernels cannot be built: "
                f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r}"
            )
        return True
    return possible


def extension():
    rel = lambda p: os.path.relpath(p, HERE)  # noqa: E731
    sources = [rel(os.path.join(HERE, "csrc", "ops.cpp"))]
    sources += sorted(rel(p) for p in glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    # -fopenmp: at::parallel_for is inline OpenMP; GOMP symbols resolve to the libgomp torch already loads.
    cxx = ["-O3", "-fvisibility=hidden", "-fopenmp", "-Wall", "-Wextra"]
    if want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(rel(p) for p in glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
        sources += sorted(rel(p) for p in glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))
        return CUDAExtension(
            "erda_sparse._C",
            sources,
            define_macros=[("ERDA_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--expt-relaxed-constexpr", "-Xcompiler=-Wall,-Wextra"]},
        )
    return CppExtension("erda_sparse._C", sources, extra_compile_args={"cxx": cxx})


# The project's metadata (name, version, dependencies, packages) is in pyproject.toml; this file adds what needs
# the installed torch: the extension and its build command.
setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
