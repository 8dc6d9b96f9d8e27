"""Weak-label protocols: counts per the definitions, seeded, saved and loaded."""
import numpy as np
import pytest

from erda_sparse.data import IGNORE_LABEL
from erda_sparse.data import weak_labels as wl


def scene_labels(seed=0, n=5000):
    rng = np.random.default_rng(seed)
    lab = rng.choice(np.arange(-1, 6), n, p=[0.1, 0.4, 0.3, 0.1, 0.07, 0.02, 0.01]).astype(np.int16)
    return lab


@pytest.mark.parametrize("ratio", [0.01, 0.001, 0.2])
def test_ratio_per_scene_and_class(ratio):
    lab = scene_labels()
    idx = wl.choose(lab, "ratio", ratio, wl.scene_rng(0, "s"))
    assert len(np.unique(idx)) == len(idx) and (lab[idx] >= 0).all()
    for k in range(6):
        n_k = int((lab == k).sum())
        assert int((lab[idx] == k).sum()) == max(int(np.floor(ratio * n_k)), 1)


def test_per_class_per_scene_full():
    lab = scene_labels(1)
    idx = wl.choose(lab, "per_class", 20, wl.scene_rng(0, "s"))
    for k in range(6):
        assert int((lab[idx] == k).sum()) == min(20, int((lab == k).sum()))
    idx = wl.choose(lab, "per_scene", 50, wl.scene_rng(0, "s"))
    assert len(idx) == 50 and (lab[idx] >= 0).all()
    idx = wl.choose(lab, "full")
    np.testing.assert_array_equal(idx, np.flatnonzero(lab >= 0))


def test_seeded_and_order_independent():
    scenes = {"a": scene_labels(0), "b": scene_labels(1)}
    x = wl.choose_all(scenes, "ratio", 0.01, seed=3)
    y = wl.choose_all(dict(reversed(list(scenes.items()))), "ratio", 0.01, seed=3)
    z = wl.choose_all(scenes, "ratio", 0.01, seed=4)
    for k in scenes:
        np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x[k], z[k]) for k in scenes)


def test_apply_keeps_unannotated_unlabeled():
    lab = scene_labels(2)
    idx = wl.choose(lab, "per_scene", 100, wl.scene_rng(0, "s"))
    weak = wl.apply(lab, idx)
    assert (weak >= 0).sum() == 100
    assert (weak[lab == IGNORE_LABEL] == IGNORE_LABEL).all()
    np.testing.assert_array_equal(weak[idx], lab[idx])


def test_save_load_roundtrip_and_checks(tmp_path):
    scenes = {"a": scene_labels(0), "b": scene_labels(1)}
    chosen = wl.choose_all(scenes, "per_class", 5, seed=1)
    path = tmp_path / "run" / "labels.npz"
    wl.save(path, chosen, "per_class", 5, 1)
    back, meta = wl.load(path)
    assert meta == {"protocol": "per_class", "value": 5, "seed": 1, "format": 1}
    for k in scenes:
        np.testing.assert_array_equal(back[k], chosen[k])
    wl.check_against(path, back, scenes)
    with pytest.raises(wl.WeakLabelError, match="no labels chosen for scene 'c'"):
        wl.check_against(path, back, {**scenes, "c": scene_labels(3)})
    with pytest.raises(wl.WeakLabelError, match="out of range"):
        wl.check_against(path, back, {"a": scenes["a"][:10], "b": scenes["b"]})
    with pytest.raises(wl.WeakLabelError, match="label file not found"):
        wl.load(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_text("x")
    with pytest.raises(wl.WeakLabelError, match="not a weak-label file"):
        wl.load(tmp_path / "bad.npz")


def test_bad_protocol_arguments():
    lab = scene_labels()
    with pytest.raises(wl.WeakLabelError, match="unknown weak-label protocol"):
        wl.choose(lab, "some", 1)
    with pytest.raises(wl.WeakLabelError, match="ratio must be in"):
        wl.choose(lab, "ratio", 1.5, wl.scene_rng(0, "s"))
    with pytest.raises(wl.WeakLabelError, match="positive whole number"):
        wl.choose(lab, "per_scene", 0, wl.scene_rng(0, "s"))
