"""The one place erda_sparse imports MinkowskiEngine.

MinkowskiEngine 0.5.4 (its last release) still does `from collections import Sequence`, which fails on
Python >= 3.10; the abstract base classes are aliased from collections.abc into collections, in this
process only, before it is imported. Everything else in erda_sparse does `from erda_sparse.minkowski import ME`.
"""
import collections
import collections.abc
import warnings

for _name in ("Sequence", "MutableSequence", "Mapping", "MutableMapping", "Iterable", "Iterator", "Callable",
              "Set", "MutableSet", "Hashable", "Sized", "Container"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

INSTALL_HINT = (
    "MinkowskiEngine 0.5.4 is required for the models and the trainer. From the repository root, "
    "`bash scripts/install.sh` installs it (CPU-only; ERDA_ME_CUDA=1 for a CUDA build), or by hand: "
    "apt-get install -y libopenblas-dev && pip install 'pip>=23.3' && MAX_JOBS=2 CFLAGS=-g0 pip install "
    "--no-build-isolation --no-deps --config-settings=--global-option=--blas=openblas "
    "--config-settings=--global-option=--cpu_only minkowskiengine==0.5.4"
)

try:
    with warnings.catch_warnings():  # a CPU-only build is deliberate here: no warning about it on every import
        warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY")
        import MinkowskiEngine as ME  # noqa: E402
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"{INSTALL_HINT}\n(import failed: {exc})") from exc

__all__ = ["ME"]
