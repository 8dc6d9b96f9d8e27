"""Why `erda_sparse._C` (the compiled kernels) did not import, in words a user can act on."""
import glob
import os
import sys


def _built_copies(package_dir):
    """Folders on sys.path, other than the one holding `package_dir`, whose erda_sparse/ has built kernels."""
    here = os.path.realpath(os.path.dirname(package_dir))
    found = []
    for entry in sys.path:
        entry = os.path.realpath(entry or os.getcwd())
        if entry != here and glob.glob(os.path.join(entry, "erda_sparse", "_C*.so")):
            found.append(os.path.join(entry, "erda_sparse"))
    return found


def import_error_advice(exc):
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if glob.glob(os.path.join(package_dir, "_C*.so")):  # built, yet not loadable: a build for another torch
        return (f"erda_sparse's kernels in {package_dir} do not load ({exc}); they were probably built against "
                "another PyTorch than this one. Rebuild them: `pip install --no-build-isolation -e .` in the "
                "checkout (or `bash scripts/install.sh`).")
    others = _built_copies(package_dir)
    if others:
        return (f"Python imported erda_sparse from {package_dir}, a source tree without built kernels (it comes "
                f"first on sys.path: `python -m` and `python -c` put the current folder there), while the "
                f"installed copy at {others[0]} has them. Build the kernels in this tree with `pip install "
                f"--no-build-isolation -e .` (what scripts/install.sh does), or run from another folder.")
    return (f"erda_sparse's kernels (erda_sparse._C) are not built in {package_dir} ({exc}). Build them with "
            "`bash scripts/install.sh` (everything) or `pip install --no-build-isolation -e .` (this package, "
            "with PyTorch already installed).")
