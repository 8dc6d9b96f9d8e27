"""torchrun data parallelism on CPU (gloo) and surviving a killed run: SIGKILL mid-epoch then --resume
ends where an uninterrupted run ends; SIGTERM saves a checkpoint; a corrupted checkpoint is reported and
the previous one used."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from erda_sparse.checkpoint import latest, listed

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TINY = ["--scannet", "--model", "MinkUNet14A", "--voxel-size", "0.1", "--threads", "1", "--synthetic-rooms", "4"]


@pytest.fixture
def env(tmp_path):
    e = {**os.environ, "ERDA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # --threads alone, as documented
        e.pop(var, None)
    e.pop("SCANNET_ROOT", None)
    return tmp_path, e


def run(args, env, cwd, timeout=600, check=True):
    r = subprocess.run([sys.executable, "-m", "erda_sparse.train", *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=cwd)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def final_state(out):
    return latest(str(out))[1]


def assert_same_params(a, b, atol=0.0):
    for part in ("model", "head"):
        for k in a[part]:
            if atol == 0:
                assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
            else:
                torch.testing.assert_close(a[part][k].float(), b[part][k].float(), rtol=0, atol=atol,
                                           msg=lambda m: f"{part}.{k}: {m}")


def max_diff(a, b):
    return max((a[p][k].double() - b[p][k].double()).abs().max().item() for p in ("model", "head") for k in a[p])


def test_two_cpu_ranks_match_each_other_and_one_process(env):
    tmp, e = env
    common = TINY + ["--epochs", "1", "--max-steps", "2", "--eval-every", "1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "erda_sparse.train", *common, "--batch-size", "1", "--out", str(tmp / "ddp"), "--dump-rank-state",
           str(tmp / "ddp_ranks")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=e, cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r0 = torch.load(tmp / "ddp_ranks" / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp / "ddp_ranks" / "rank1.pt", weights_only=False)
    assert_same_params(r0, r1)  # parameters, batch-norm statistics and prototypes identical on both ranks
    assert r0["head"]["seen"].any()
    assert json.load(open(tmp / "ddp" / "config.json"))["world_size"] == 2
    # one process with the same global batch (2), twice: with 1 and with 2 threads, which changes nothing but
    # the order of float sums; the 2-process run must be as close to it as that
    run(common + ["--batch-size", "2", "--out", str(tmp / "one"), "--dump-rank-state", str(tmp / "one_r")], e, tmp)
    e2 = e
    args2 = [a if a != "1" or i == 0 or common[i - 1] != "--threads" else "2" for i, a in enumerate(common)]
    run(args2 + ["--batch-size", "2", "--out", str(tmp / "one2"), "--dump-rank-state", str(tmp / "one2_r")], e2, tmp)
    one = torch.load(tmp / "one_r" / "rank0.pt", weights_only=False)
    one2 = torch.load(tmp / "one2_r" / "rank0.pt", weights_only=False)
    noise = max_diff(one, one2)
    assert 0 < noise < 1e-2
    assert max_diff(r0, one) <= 4 * noise, (max_diff(r0, one), noise)
    steps = lambda d: [json.loads(x)["loss"] for x in open(d / "metrics.jsonl") if '"train_step"' in x]  # noqa: E731
    loss_noise = max(abs(a - b) for a, b in zip(steps(tmp / "one"), steps(tmp / "one2")))
    assert max(abs(a - b) for a, b in zip(steps(tmp / "ddp"), steps(tmp / "one"))) <= 4 * loss_noise + 1e-6


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(env):
    tmp, e = env
    args = TINY + ["--epochs", "2", "--batch-size", "1", "--ckpt-every", "2", "--eval-every", "1", "--keep", "10"]
    run(args + ["--out", str(tmp / "whole")], e, tmp)
    out = tmp / "killed"
    p = subprocess.Popen([sys.executable, "-m", "erda_sparse.train", *args, "--out", str(out)], env=e, cwd=tmp,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "ckpt-00000002.pt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    resumed_from = latest(str(out))[1]
    assert resumed_from["step"] < 6  # killed before the end
    r = run(args + ["--out", str(out), "--resume"], e, tmp)
    assert "resumed from" in r.stdout
    assert_same_params(final_state(tmp / "whole"), final_state(out))
    vals = lambda d: [json.loads(x) for x in open(d / "metrics.jsonl") if '"val"' in x]  # noqa: E731
    assert vals(tmp / "whole")[-1] == vals(out)[-1]


def test_sigterm_saves_a_checkpoint_and_corrupt_ones_are_passed_over(env):
    tmp, e = env
    out = tmp / "run"
    args = TINY + ["--epochs", "3", "--batch-size", "1", "--ckpt-every", "1", "--eval-every", "3", "--out", str(out)]
    p = subprocess.Popen([sys.executable, "-m", "erda_sparse.train", *args], env=e, cwd=tmp,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (out / "ckpt-00000001.pt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    text, _ = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, text[-2000:]
    assert "stopping on signal 15" in text
    newest, state = latest(str(out))
    assert state["step"] >= 1 and state["step"] < 9
    # corrupt the newest checkpoint: --resume names it and continues from the one before
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[: len(data) // 2])
    if len(listed(str(out))) < 2:
        pytest.skip("the run was stopped before a second checkpoint existed")
    r = run(args + ["--resume"], e, tmp)
    assert f"{newest}: unreadable checkpoint" in r.stdout
    assert final_state(out)["step"] == 9


def test_resume_refuses_another_data_root_or_label_file(env, tmp_path):
    tmp, e = env
    out = tmp / "run"
    run(TINY + ["--epochs", "1", "--batch-size", "2", "--out", str(out)], e, tmp)
    other = tmp / "other_data"
    from erda_sparse.data import synthetic

    synthetic.write_dataset(str(other), rooms=2, seed=5)
    r = run(TINY + ["--epochs", "2", "--out", str(out), "--resume", "--data-root", str(other)], e, tmp, check=False)
    assert r.returncode == 2 and f"--data-root {str(other)!r} (the run has" in r.stderr
    wrong = tmp / "labels_other.npz"
    os.link(out / "labels.npz", wrong)
    r = run(TINY + ["--epochs", "2", "--out", str(out), "--resume", "--label-file", str(wrong)], e, tmp, check=False)
    assert r.returncode == 2 and f"--label-file {str(wrong)!r} (the run has" in r.stderr
