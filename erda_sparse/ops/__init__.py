"""The fused ERDA loss. `erda_loss` runs the native kernels; `reference.erda_loss` is the same function as
a plain PyTorch composition."""
from . import reference
from ._checks import DISTANCES, ERDA_POINTS, REDUCTIONS
from .loss import _C, erda_loss  # loss.py imports the kernels, with advice when they do not load


def cpu_capability():
    """The CPU kernel variant in use: 'avx2' or 'generic' (chosen at run time from the CPU's features;
    the environment variable ERDA_CPU_CAPABILITY, read once, can force one)."""
    return _C.cpu_capability()


def set_cpu_capability(name=""):
    """Force a CPU kernel variant ('avx2' or 'generic'); '' picks the best this CPU supports."""
    _C.set_cpu_capability(name)


def cuda_built():
    """Whether this build carries the CUDA kernels."""
    return bool(_C.with_cuda)


__all__ = ["erda_loss", "reference", "DISTANCES", "REDUCTIONS", "ERDA_POINTS", "cpu_capability",
           "set_cpu_capability", "cuda_built"]
