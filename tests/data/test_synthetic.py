"""Synthetic rooms: the raw ScanNet layout, faces, 20k-60k points, all 20 classes, deterministic."""
import numpy as np
from plyfile import PlyData

from erda_sparse.data import scannet, synthetic


def test_rooms_are_deterministic_and_plausible():
    a = synthetic.make_room(3)
    b = synthetic.make_room(3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    seen = set()
    for seed in range(12):
        verts, cols, labs, faces = synthetic.make_room(seed)
        assert 20000 <= len(verts) <= 60000
        assert faces.max() < len(verts) and faces.min() >= 0
        assert verts[:, 2].min() > -0.05 and verts[:, 2].max() < 3.1  # floor at z = 0, walls up to the ceiling
        seen |= set(scannet.map_nyu40(labs)[scannet.map_nyu40(labs) >= 0].tolist())
        assert (labs == 0).any() or (labs == 40).any()  # unannotated clutter / "otherprop"
    assert seen == set(range(20))


def test_dataset_in_the_raw_layout(tmp_path):
    splits = synthetic.write_dataset(str(tmp_path), rooms=3, seed=1)
    assert scannet.is_scannet_root(str(tmp_path))
    assert scannet.read_split(str(tmp_path), "train") == splits["train"]
    scene = splits["val"][0]
    for path in (scannet.mesh_path(str(tmp_path), scene), scannet.labels_path(str(tmp_path), scene)):
        ply = PlyData.read(path)
        assert ply["face"].count > 0 and ply["vertex"].count > 20000
    s = scannet.read_scene(str(tmp_path), scene)
    assert s.labels.max() < 20 and (s.labels >= 0).mean() > 0.9
