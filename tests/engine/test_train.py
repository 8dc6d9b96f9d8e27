"""The trainer and evaluator: metrics against a hand-computed case, a short run that lowers the loss on
synthetic rooms, the pseudo head's gradient with and without --detach-pseudo, resume, and the real
ScanNet sample end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from plyfile import PlyData

from erda_sparse import train
from erda_sparse.checkpoint import latest, listed
from erda_sparse.errors import UsageError
from erda_sparse.metrics import confusion, scores
from erda_sparse.models import minkunet
from erda_sparse.models.pseudo_head import PseudoLabelHead

pytestmark = [pytest.mark.slow]

TINY = ["--scannet", "--model", "MinkUNet14A", "--voxel-size", "0.1", "--batch-size", "1"]


def test_iou_from_a_hand_computed_confusion_matrix():
    target = np.array([0, 0, 0, 1, 1, 2, 2, 2, -1, -1])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    cm = confusion(pred, target, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    s = scores(cm)
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 1, FP 1, FN 1 -> 1/3; class 2: TP 2, FP 1, FN 1 -> 2/4
    np.testing.assert_allclose(s["iou"][:3], [0.5, 1 / 3, 0.5])
    assert np.isnan(s["iou"][3])  # neither present nor predicted: left out of the mean
    np.testing.assert_allclose(s["miou"], (0.5 + 1 / 3 + 0.5) / 3)
    np.testing.assert_allclose(s["macc"], (2 / 3 + 1 / 2 + 2 / 3) / 3)
    np.testing.assert_allclose(s["oa"], 5 / 8)


def test_short_run_lowers_the_loss_on_synthetic_rooms(env, capsys):
    out = env / "run"
    train.main(TINY + ["--epochs", "6", "--eval-every", "6", "--synthetic-rooms", "3", "--out", str(out)])
    said = capsys.readouterr().out
    assert "No ScanNet v2 data found" in said and "synthetic rooms" in said
    rec = [json.loads(line) for line in open(out / "metrics.jsonl")]
    epochs = [r for r in rec if r["kind"] == "train_epoch"]
    assert len(epochs) == 6 and epochs[-1]["loss"] < 0.8 * epochs[0]["loss"]
    assert [r for r in rec if r["kind"] == "val"]
    for name in ("config.json", "labels.npz", "best.pt", "curves.png"):
        assert (out / name).is_file(), name
    assert listed(str(out))  # step checkpoints
    cfg = json.load(open(out / "config.json"))
    assert cfg["labels"]["protocol"] == "ratio" and cfg["erda_weight"] == 0.1


@pytest.mark.parametrize("detach", [False, True])
def test_pseudo_head_trains_through_p_unless_detached(env, detach):
    out = env / "run"
    args = TINY + ["--epochs", "1", "--max-steps", "1", "--synthetic-rooms", "3", "--out", str(out)]
    train.main(args + (["--detach-pseudo"] if detach else []))
    state = latest(str(out))[1]
    assert state["step"] == 1 and state["config"]["max_steps"] == 1  # the runtime flag reached the run
    assert state["config"]["proto_momentum"] == 0.5  # auto: 1 - 10 / 2 steps, clipped
    torch.manual_seed(0)  # the trainer's initialisation, rebuilt
    minkunet.build("MinkUNet14A", 3, 20)
    head = PseudoLabelHead(96, 20)
    for key in ("proj.0.weight", "proj.3.weight"):
        same = torch.equal(state["head"][key], head.state_dict()[key])
        assert same == detach, key


def test_resume_continues_and_refuses_another_model(env):
    out = env / "run"
    base = TINY + ["--synthetic-rooms", "3", "--out", str(out)]
    train.main(base + ["--epochs", "1"])
    first = latest(str(out))[1]
    train.main(base + ["--epochs", "2", "--resume", "--extend"])
    second = latest(str(out))[1]
    assert (first["epoch"], second["epoch"]) == (1, 2) and second["step"] == 2 * first["step"]
    with pytest.raises(UsageError, match="--model 'MinkUNet14B' \\(the run has 'MinkUNet14A'\\)"):
        train.train(base + ["--epochs", "3", "--resume", "--model", "MinkUNet14B"])


def test_real_scannet_sample_trains_and_evaluates(env, scannet_sample):
    out = env / "run"
    train.main(TINY + ["--data-root", str(scannet_sample), "--epochs", "1", "--max-steps", "2", "--out", str(out)])
    r = subprocess.run([sys.executable, "-m", "erda_sparse.evaluate", "--ckpt", str(out / "best.pt")],
                       capture_output=True, text=True, timeout=600, cwd=env, env={**os.environ})
    assert r.returncode == 0, r.stderr
    assert "mIoU" in r.stdout and "wall" in r.stdout
    m = json.load(open(out / "eval-val" / "metrics.json"))
    assert len(m["iou"]) == 20 and 0 <= m["oa"] <= 1
    val = [line.strip() for line in open(scannet_sample / "scannetv2_val.txt") if line.strip()]
    ply = PlyData.read(str(out / "eval-val" / f"{val[0]}_pred.ply"))
    n = PlyData.read(str(scannet_sample / "scans" / val[0] / f"{val[0]}_vh_clean_2.ply"))["vertex"].count
    assert ply["vertex"].count == n  # a prediction for every original point
