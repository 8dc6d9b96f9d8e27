import os
import pathlib

import pytest

# The tests import erda_sparse as a user does: scripts/install.sh installs this checkout in editable mode, so
# the package is this source tree with its kernels built in place (tests/test_cli.py runs the README's
# commands from the repository root to keep it so).
REPO = pathlib.Path(__file__).resolve().parents[1]
SCANNET_SAMPLE = pathlib.Path(
    os.environ.get("ERDA_SCANNET_SAMPLE", REPO.parent / "shared" / "data" / "scannet-real-sample")
)


@pytest.fixture
def scannet_sample():
    """The real ScanNet v2 sample beside the checkout (never copied into the repo); skips when absent."""
    if not (SCANNET_SAMPLE / "scans").is_dir():
        pytest.skip(f"real ScanNet sample not found at {SCANNET_SAMPLE}")
    return SCANNET_SAMPLE


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A run's surroundings of its own: the test's folder as the working directory, its own cache, no
    $SCANNET_ROOT (the trainer then trains on synthetic rooms)."""
    monkeypatch.setenv("ERDA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SCANNET_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_configure(config):
    # MinkowskiEngine 0.5.4 instantiates its autograd Functions, which current PyTorch deprecates
    config.addinivalue_line("filterwarnings", "ignore:.*should not be instantiated.*:DeprecationWarning")
