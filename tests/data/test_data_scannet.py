"""ScanNet v2 raw-layout reading, the NYU40 -> 20 class map, the cache. Real scans when the sample is
beside the checkout; PLY files with faces written here otherwise."""
import os
import subprocess
import sys

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from erda_sparse.data import IGNORE_LABEL, cache, scannet


def write_scene(root, scene, n=50, seed=0, labels=None, faces=True, n_labels=None):
    rng = np.random.default_rng(seed)
    d = root / "scans" / scene
    d.mkdir(parents=True, exist_ok=True)
    vdt = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    v = np.empty(n, dtype=vdt)
    xyz = rng.random((n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3))
    v["x"], v["y"], v["z"] = xyz.T
    v["red"], v["green"], v["blue"] = rgb.T
    v["alpha"] = 255
    elements = [PlyElement.describe(v, "vertex")]
    if faces:
        f = np.empty(n - 2, dtype=[("vertex_indices", "i4", (3,))])
        f["vertex_indices"] = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], 1)
        elements.append(PlyElement.describe(f, "face"))
    PlyData(elements).write(str(d / f"{scene}_vh_clean_2.ply"))
    nl = n if n_labels is None else n_labels
    labels = rng.choice([0, 1, 2, 3, 5, 14, 39, 40, 50, 149], nl) if labels is None else labels
    lv = np.empty(nl, dtype=vdt + [("label", "u2")])
    for name in ("x", "y", "z", "red", "green", "blue", "alpha"):
        lv[name] = v[name][:nl] if nl <= n else np.resize(v[name], nl)
    lv["label"] = labels
    lel = [PlyElement.describe(lv, "vertex")] + elements[1:]
    PlyData(lel).write(str(d / f"{scene}_vh_clean_2.labels.ply"))
    return xyz, rgb, labels


def write_split(root, split, scenes):
    (root / f"scannetv2_{split}.txt").write_text("\n".join(scenes) + "\n")


def test_class_map():
    raw = np.array([0, 1, 2, 3, 13, 14, 39, 40, 50, 149, 65535])
    got = scannet.map_nyu40(raw)
    assert got.tolist() == [IGNORE_LABEL, 0, 1, 2, IGNORE_LABEL, 12, 19, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL,
                            IGNORE_LABEL]
    assert len(scannet.CLASS_NAMES) == len(scannet.PALETTE) == scannet.NUM_CLASSES == 20
    assert scannet.CLASS_NAMES[scannet.map_nyu40(np.array([24]))[0]] == "refrigerator"
    assert scannet.colorize(np.array([0, -1])).tolist() == [[174, 199, 232], [0, 0, 0]]


def test_reads_ply_with_faces(tmp_path):
    xyz, rgb, labels = write_scene(tmp_path, "scene0001_00", n=80, seed=1)
    s = scannet.read_scene(str(tmp_path), "scene0001_00")
    np.testing.assert_array_equal(s.coords, xyz)
    np.testing.assert_array_equal(s.colors, rgb)
    np.testing.assert_array_equal(s.labels, scannet.map_nyu40(labels))
    assert s.coords.dtype == np.float32 and s.colors.dtype == np.uint8 and s.labels.dtype == np.int16


def test_errors_name_the_file_and_problem(tmp_path):
    root = tmp_path
    write_scene(root, "a", n=20)
    write_scene(root, "b", n=20, n_labels=19)
    write_split(root, "train", ["a", "b"])
    with pytest.raises(scannet.ScanNetError,
                       match=r"b_vh_clean_2.labels.ply: 19 vertices, but .*b_vh_clean_2.ply has 20"):
        scannet.read_scene(str(root), "b")
    os.remove(root / "scans" / "a" / "a_vh_clean_2.labels.ply")
    with pytest.raises(scannet.ScanNetError, match=r"a_vh_clean_2.labels.ply: labels file missing for train scene 'a'"):
        scannet.read_split(str(root), "train")
    with pytest.raises(scannet.ScanNetError, match=r"scannetv2_val.txt: split file not found"):
        scannet.read_split(str(root), "val")
    write_split(root, "val", ["zzz"])
    with pytest.raises(scannet.ScanNetError, match=r"scannetv2_val.txt: lists scene 'zzz' but"):
        scannet.read_split(str(root), "val")
    mesh = root / "scans" / "b" / "b_vh_clean_2.ply"
    data = mesh.read_bytes()
    mesh.write_bytes(data[: len(data) - 40])
    with pytest.raises(scannet.ScanNetError, match=r"b_vh_clean_2.ply: (not a readable PLY|truncated)"):
        scannet.read_scene(str(root), "b", with_labels=False)
    mesh.write_text("this is not a ply file\n")
    with pytest.raises(scannet.ScanNetError, match=r"b_vh_clean_2.ply: not a readable PLY"):
        scannet.read_scene(str(root), "b", with_labels=False)


def test_test_split_needs_no_labels(tmp_path):
    write_scene(tmp_path, "t", n=10)
    os.remove(tmp_path / "scans" / "t" / "t_vh_clean_2.labels.ply")
    write_split(tmp_path, "test", ["t"])
    assert scannet.read_split(str(tmp_path), "test") == ["t"]
    s = scannet.read_scene(str(tmp_path), "t", with_labels=False)
    assert (s.labels == IGNORE_LABEL).all()


def test_cache_builds_once_and_rebuilds_when_stale(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        write_scene(root, f"s{i}", n=30, seed=i)
    write_split(root, "train", ["s0", "s1"])
    write_split(root, "val", ["s2"])
    cdir = str(tmp_path / "cache")
    cache.prepare(str(root), cache_dir=cdir, workers=2, progress=False)
    stamps = {f: os.stat(os.path.join(cdir, f)).st_mtime_ns for f in os.listdir(cdir)}
    assert sorted(stamps) == ["s0.npz", "s1.npz", "s2.npz"]
    cache.prepare(str(root), cache_dir=cdir, progress=False)  # nothing to do
    assert {f: os.stat(os.path.join(cdir, f)).st_mtime_ns for f in os.listdir(cdir)} == stamps
    write_scene(root, "s1", n=35, seed=7)  # the source changed: s1 is stale
    assert not cache.is_fresh(str(root), "s1", cdir)
    cache.prepare(str(root), cache_dir=cdir, progress=False)
    s1 = cache.load(cdir, "s1")
    assert len(s1.coords) == 35
    assert os.stat(os.path.join(cdir, "s0.npz")).st_mtime_ns == stamps["s0.npz"]


def test_real_scannet_sample(scannet_sample, tmp_path):
    root = str(scannet_sample)
    assert sorted(scannet.read_split(root, "train") + scannet.read_split(root, "val")) == [
        "scene0000_00", "scene0000_01", "scene0000_02"]
    counts = {"scene0000_00": 81369, "scene0000_01": 80583, "scene0000_02": 86001}
    for scene, n in counts.items():
        s = scannet.read_scene(root, scene)
        assert len(s.coords) == len(s.colors) == len(s.labels) == n
        raw = PlyData.read(scannet.labels_path(root, scene))["vertex"]["label"]
        expected = np.array([scannet.NYU40_IDS.index(v) if v in scannet.NYU40_IDS else IGNORE_LABEL for v in raw])
        np.testing.assert_array_equal(s.labels, expected)  # the map, element by element
        hist = np.bincount(s.labels[s.labels >= 0], minlength=20)
        names = scannet.CLASS_NAMES
        assert hist[names.index("wall")] > 0.05 * n and hist[names.index("floor")] > 0.05 * n
        assert (hist > 0).sum() >= 8 and (s.labels == IGNORE_LABEL).mean() < 0.5
        assert 0.0 < s.coords[:, 2].min() + 0.5 and s.coords[:, 2].max() < 5.0  # axis-aligned, floor near z = 0
    all_raw = np.concatenate([PlyData.read(scannet.labels_path(root, sc))["vertex"]["label"] for sc in counts])
    outside = set(np.unique(all_raw).tolist()) - set(scannet.NYU40_IDS) - {0}
    assert outside  # NYU40 ids outside the 20 classes exist in real scans (and were mapped to ignore above)
    # the prepare command on the real sample (read-only data root, cache elsewhere)
    r = subprocess.run([sys.executable, "-m", "erda_sparse.data.prepare", "--data-root", root, "--cache-dir",
                        str(tmp_path / "c"), "--workers", "2"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cached = cache.load(str(tmp_path / "c"), "scene0000_00")
    np.testing.assert_array_equal(cached.labels, scannet.read_scene(root, "scene0000_00").labels)


def test_prepare_command_reports_bad_data(tmp_path):
    write_scene(tmp_path, "a", n=10)
    write_split(tmp_path, "train", ["a", "missing_scene"])
    r = subprocess.run([sys.executable, "-m", "erda_sparse.data.prepare", "--data-root", str(tmp_path), "--splits",
                        "train", "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 2 and "missing_scene" in r.stderr
