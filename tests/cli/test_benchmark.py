"""The loss benchmark runs (quick mode) and reports what it promises; no speed is asserted here."""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "loss_throughput.py"


def test_quick_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    # from the repository root, as the README has it
    r = subprocess.run([sys.executable, str(BENCH.relative_to(REPO)), "--quick", "--compile", "--labels", "with",
                        "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CPU vector path of the fused op" in r.stdout
    data = json.loads(out.read_text())
    assert data["header"]["cpu_vector_path"] in ("avx2", "generic")
    assert len(data["results"]) == 2
    for row in data["results"]:
        for variant in ("fused", "eager", "compile"):
            assert row[variant]["median_ms"] > 0 and row[variant]["runs"] >= 3
        assert row["copy_GBps"] > 0 and row["floor_ms"] > 0 and row["fused_over_floor"] > 0
        assert row["speedup_vs_eager"] > 0 and row["speedup_vs_compile"] > 0
        # the fused op allocates the two gradients and O(N) besides, nothing else of size N x C
        nc_bytes = row["N"] * row["C"] * 4
        extra = row["fused"]["peak_extra_MB"] * 2**20
        assert 2 * nc_bytes <= extra <= 2 * nc_bytes + 16 * row["N"] + 4096, (extra, nc_bytes)
        # while the eager composition materialises several N x C temporaries
        assert row["eager"]["peak_extra_MB"] * 2**20 > 3 * nc_bytes


def test_quick_mode_leaves_compile_out_unless_asked(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--labels", "without", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 and all("compile" not in row and row["fused"]["median_ms"] > 0 for row in rows)


@pytest.mark.slow
def test_label_efficiency_quick_runs_arms_on_shared_labels_and_reports(tmp_path):
    out = tmp_path / "le"
    env = {**__import__("os").environ, "ERDA_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "benchmarks/label_efficiency.py", "--quick", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "full - CE (the gap labels leave)" in r.stdout and "erda - CE" in r.stdout
    data = json.loads((out / "results.json").read_text())
    assert set(data["results"]) == {"erda", "ce", "full"}
    for arm, per_seed in data["results"].items():
        (run,) = per_seed.values()
        assert 0 <= run["final"] <= run["best"] <= 1 and run["curve"]
        # unlabeled-voxel diagnostics where there are unlabeled voxels; the pseudo head's only with ERDA
        assert ("seg_acc" in run["last_epoch"]) == (arm != "full")
        assert ("pseudo_acc" in run["last_epoch"]) == (arm == "erda")
    cmds = {arm: json.loads((out / "runs" / f"{arm}-s0" / "command.json").read_text()) for arm in ("erda", "ce")}
    label_file = str((out / "labels-s0.npz").resolve())
    assert all(c[c.index("--label-file") + 1] == label_file for c in cmds.values())  # the same weak labels
    assert (out / "label_efficiency.png").is_file()
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert r2.returncode == 0 and r2.stdout.count(": reused") == 3  # finished runs are not trained again
