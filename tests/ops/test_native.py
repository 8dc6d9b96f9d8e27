"""The native parts without PyTorch, through CMake: the row-maths C++ tests (ctest) and, where nvcc
exists, the compile check of the CUDA kernels for sm_80 and sm_90."""
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_cmake_build_and_ctest(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    build = tmp_path / "build"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    r = subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), *gen], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "100% tests passed" in r.stdout
    if shutil.which("nvcc") or pathlib.Path("/usr/local/cuda/bin/nvcc").exists():
        objs = list(build.rglob("erda_loss_kernels.cu.o"))
        assert objs, "nvcc exists but the CUDA kernels were not compiled"
