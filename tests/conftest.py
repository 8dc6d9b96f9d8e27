import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Test the installed package (`pip install .`), not the source tree that `python -m pytest` puts first on
# sys.path: the source tree has no compiled kernels unless it was built in place (`pip install -e .`,
# which the editable finder still resolves without this entry).
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != REPO]
SCANNET_SAMPLE = pathlib.Path(
    os.environ.get("ERDA_SCANNET_SAMPLE", REPO.parent / "shared" / "data" / "scannet-real-sample")
)


@pytest.fixture
def scannet_sample():
    """The real ScanNet v2 sample beside the checkout (never copied into the repo); skips when absent."""
    if not (SCANNET_SAMPLE / "scans").is_dir():
        pytest.skip(f"real ScanNet sample not found at {SCANNET_SAMPLE}")
    return SCANNET_SAMPLE


def pytest_configure(config):
    # MinkowskiEngine 0.5.4 instantiates its autograd Functions, which current PyTorch deprecates
    config.addinivalue_line("filterwarnings", "ignore:.*should not be instantiated.*:DeprecationWarning")
