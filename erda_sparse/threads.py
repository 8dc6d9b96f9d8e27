"""`--threads N`: one number for every CPU thread pool in the process.

PyTorch's intra-op pool is only one of them: MinkowskiEngine's CPU kernels run OpenMP regions (whose kernel
maps are filled in thread order, so two threads change the order of the sums) and its matrix products run
on OpenBLAS's own threads. Measured on the development machine (two runs each, MinkUNet14A, 2 steps): with
torch.set_num_threads(1) and the runtimes' own setters called after start, parameters still differed by
1e-5 between identical runs; with OMP_NUM_THREADS=1 in the environment before the process loaded them they
were bit-identical. So the command-line tools set the variables from the flag before importing torch
(`preset_environment`), and `set_threads` then sets PyTorch's pools and every OpenMP / OpenBLAS runtime
already loaded (found in /proc/self/maps). A program that calls the trainer in-process gets the same only
with OMP_NUM_THREADS set before it imports torch.
"""
import ctypes
import os

ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# shared-library name fragment -> the function that sets its thread count
SETTERS = (("libgomp", "omp_set_num_threads"), ("libiomp", "omp_set_num_threads"), ("libomp", "omp_set_num_threads"),
           ("libopenblas", "openblas_set_num_threads"))


def loaded_runtimes():
    """(path, setter name) of each OpenMP / OpenBLAS library mapped into this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    found = []
    for path in sorted(p for p in paths if p.startswith("/")):
        name = os.path.basename(path)
        for fragment, setter in SETTERS:
            if name.startswith(fragment):
                found.append((path, setter))
                break
    return found


def preset_environment(argv, flag="--threads"):
    """Sets the thread variables from `--threads N` in argv, before torch and OpenMP are loaded; a bad value
    is left for the argument parser to refuse."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == flag and i + 1 < len(argv) else arg[len(flag) + 1:] \
            if arg.startswith(flag + "=") else None
        if value is not None and value.isdigit() and int(value) > 0:
            for var in ENV_VARS:
                os.environ[var] = value


def set_threads(n):
    """Every thread pool of the process to n threads; returns the runtimes reached besides PyTorch's."""
    import torch

    n = int(n)
    for var in ENV_VARS:
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    reached = []
    for path, setter in loaded_runtimes():
        try:
            getattr(ctypes.CDLL(path), setter)(ctypes.c_int(n))
            reached.append(path)
        except (OSError, AttributeError):  # a library of that name without the setter: nothing to set
            pass
    return reached
