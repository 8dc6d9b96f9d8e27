"""Voxelization against an independent numpy computation, labeled points surviving voxelization and
dropout, augmentation, the dataset and collate into a MinkowskiEngine sparse tensor."""
import numpy as np
import torch

from erda_sparse.data import IGNORE_LABEL, scannet, weak_labels
from erda_sparse.data.loader import VoxelScenes, collate
from erda_sparse.data.transforms import AugmentConfig, augment, voxel_labels, voxelize


def cloud(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    coords = (rng.random((n, 3)) * [3, 2, 1]).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    labels = rng.integers(-1, 20, n).astype(np.int16)
    return coords, colors, labels


def test_voxelize_matches_numpy():
    coords, _, _ = cloud()
    vox, index, inverse = voxelize(coords, 0.05)
    keys = np.floor(coords / 0.05).astype(np.int64)
    uniq = np.unique(keys, axis=0)
    assert len(vox) == len(uniq)
    assert {tuple(v) for v in vox.tolist()} == {tuple(u) for u in uniq.tolist()}
    np.testing.assert_array_equal(vox[inverse], keys)  # every point maps to its own voxel
    np.testing.assert_array_equal(vox, keys[index])  # each voxel's representative point lies in it


def test_labeled_points_survive_voxelization_and_dropout():
    coords, colors, labels = cloud(6000, 1)
    idx = weak_labels.choose(labels, "per_scene", 60, weak_labels.scene_rng(0, "x"))
    weak = weak_labels.apply(labels, idx)
    cfg = AugmentConfig(dropout=0.9)
    c2, col2, kept = augment(coords, colors.astype(np.float32), weak >= 0, cfg, np.random.default_rng(0))
    assert set(idx.tolist()) <= set(kept.tolist()) and len(kept) < 0.3 * len(coords)
    w2 = weak[kept]
    vox, index, inverse = voxelize(c2, 0.02)
    vl = voxel_labels(w2, inverse, len(vox))
    for p in np.flatnonzero(w2 >= 0):  # each chosen point's voxel carries a chosen label
        assert vl[inverse[p]] >= 0
        assert vl[inverse[p]] in w2[(inverse == inverse[p]) & (w2 >= 0)]
    without_labeled = np.setdiff1d(np.arange(len(vox)), inverse[w2 >= 0])
    assert ((vl >= 0).sum() <= len(idx)) and (vl[without_labeled] == IGNORE_LABEL).all()


def test_augment_is_rigid_enough_and_seeded():
    coords, colors, labels = cloud(3000, 2)
    cfg = AugmentConfig(elastic=(), dropout=0.0, scale=(1.0, 1.0), translate=0.0, tilt=0.0)
    a, _, _ = augment(coords, colors, labels >= 0, cfg, np.random.default_rng(5))
    d0 = np.linalg.norm(coords[1:] - coords[:-1], axis=1)
    d1 = np.linalg.norm(a[1:] - a[:-1], axis=1)
    np.testing.assert_allclose(d0, d1, rtol=1e-4, atol=1e-5)  # rotations and flips keep distances
    full = AugmentConfig()
    b1 = augment(coords, colors, labels >= 0, full, np.random.default_rng(9))
    b2 = augment(coords, colors, labels >= 0, full, np.random.default_rng(9))
    for x, y in zip(b1, b2):
        np.testing.assert_array_equal(x, y)
    assert b1[1].min() >= 0 and b1[1].max() <= 255


def test_dataset_and_collate_build_a_sparse_tensor():
    from erda_sparse.minkowski import ME

    scenes = []
    for i in range(3):
        c, col, lab = cloud(2000 + 100 * i, 10 + i)
        scenes.append(scannet.Scene(f"s{i}", c, col, lab))
    weak = weak_labels.choose_all({s.name: s.labels for s in scenes}, "per_class", 3, seed=0)
    ds = VoxelScenes(scenes, weak, voxel_size=0.05, train=True, seed=1)
    a, b = ds[0], ds[0]
    np.testing.assert_array_equal(a["coords"], b["coords"])  # same (seed, epoch, index): same sample
    ds.set_epoch(1)
    assert not np.array_equal(ds[0]["coords"], a["coords"])
    batch = collate([ds[i] for i in range(3)])
    assert batch["coords"].shape[1] == 4 and batch["coords"][:, 0].unique().tolist() == [0, 1, 2]
    assert batch["feats"].shape == (len(batch["coords"]), 3) and batch["labels"].dtype == torch.int64
    assert int(batch["weak_mask"].sum()) == int((batch["labels"] >= 0).sum()) > 0
    x = ME.SparseTensor(batch["feats"], coordinates=batch["coords"])
    assert x.F.shape[0] == len(batch["coords"])
    # validation: no augmentation, every original point reachable through the inverse map
    val = VoxelScenes(scenes, None, voxel_size=0.05, train=False)
    v = val[1]
    assert len(v["inverse"]) == len(scenes[1].coords) and v["inverse"].max() < len(v["coords"])
    np.testing.assert_array_equal(v["point_labels"], scenes[1].labels)


def test_loader_with_worker_processes():
    from erda_sparse.data.loader import make_loader

    scenes = [scannet.Scene(f"s{i}", *cloud(1500, 20 + i)) for i in range(4)]
    ds = VoxelScenes(scenes, None, voxel_size=0.05, train=True, seed=3)
    batches = list(make_loader(ds, batch_size=2, shuffle=True, workers=2, seed=0))
    assert len(batches) == 2 and sorted(sum((b["scenes"] for b in batches), [])) == ["s0", "s1", "s2", "s3"]
    again = list(make_loader(ds, batch_size=2, shuffle=True, workers=2, seed=0))
    for a, b in zip(batches, again):  # same seed: same order, same augmented samples
        assert a["scenes"] == b["scenes"] and torch.equal(a["coords"], b["coords"])
