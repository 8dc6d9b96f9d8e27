"""ScanNet v2 as the official release lays it out.

    <root>/scans/<scene>/<scene>_vh_clean_2.ply           vertex x, y, z (float), red, green, blue, alpha (uchar)
    <root>/scans/<scene>/<scene>_vh_clean_2.labels.ply    the same vertices plus `label` (NYU40 id, 0 = unannotated)
    <root>/scannetv2_train.txt, scannetv2_val.txt, scannetv2_test.txt   one scene id a line

The 20 benchmark classes are NYU40 ids mapped to 0..19; every other value (0, ids outside the table,
values such as 50 or 149 found in real scenes) becomes IGNORE_LABEL.
"""
import os
from dataclasses import dataclass

import numpy as np

from ..errors import ErdaError
from . import IGNORE_LABEL

NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
CLASS_NAMES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
               "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
               "bathtub", "otherfurniture")
# The ScanNet benchmark's colours, class by class.
PALETTE = np.array([
    (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
    (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
    (247, 182, 210), (219, 219, 141), (255, 127, 14), (158, 218, 229), (44, 160, 44), (112, 128, 144),
    (227, 119, 194), (82, 84, 163)], dtype=np.uint8)
IGNORE_COLOR = np.array((0, 0, 0), dtype=np.uint8)
NUM_CLASSES = len(NYU40_IDS)
SPLITS = ("train", "val", "test")

_LUT = np.full(65536, IGNORE_LABEL, dtype=np.int16)
_LUT[list(NYU40_IDS)] = np.arange(NUM_CLASSES, dtype=np.int16)


class ScanNetError(ErdaError, ValueError):
    """Bad or missing ScanNet data; the message names the file and the problem."""


def map_nyu40(raw):
    """NYU40 ids (any integer array) -> 0..19, everything else -> IGNORE_LABEL (int16)."""
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iu":
        raise ScanNetError(f"NYU40 labels must be integers, got dtype {raw.dtype}")
    out = np.full(raw.shape, IGNORE_LABEL, dtype=np.int16)
    inside = (raw >= 0) & (raw < len(_LUT))
    out[inside] = _LUT[raw[inside].astype(np.int64)]
    return out


def colorize(labels):
    """Class labels (IGNORE_LABEL allowed) -> (N, 3) uint8 benchmark colours."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape + (3,), dtype=np.uint8)
    valid = (labels >= 0) & (labels < NUM_CLASSES)
    out[valid] = PALETTE[labels[valid]]
    out[~valid] = IGNORE_COLOR
    return out


def mesh_path(root, scene):
    return os.path.join(root, "scans", scene, f"{scene}_vh_clean_2.ply")


def labels_path(root, scene):
    return os.path.join(root, "scans", scene, f"{scene}_vh_clean_2.labels.ply")


def split_path(root, split):
    return os.path.join(root, f"scannetv2_{split}.txt")


def root_problem(root, splits=("train", "val")):
    """What keeps `root` from being a ScanNet v2 raw folder with these splits, in words; None when nothing."""
    if not os.path.exists(root):
        return "no such folder"
    if not os.path.isdir(root):
        return "not a folder"
    missing = [] if os.path.isdir(os.path.join(root, "scans")) else ["scans/"]
    missing += [os.path.basename(split_path(root, s)) for s in splits if not os.path.isfile(split_path(root, s))]
    if missing:
        return f"it has no {', no '.join(missing)} (a ScanNet v2 folder holds scans/<scene>/<scene>_vh_clean_2.ply " \
               "and _vh_clean_2.labels.ply, and the split lists scannetv2_<split>.txt)"
    return None


def is_scannet_root(root, splits=("train", "val")):
    """Whether `root` is a ScanNet v2 raw folder: a scans/ folder and the split lists of `splits`."""
    return bool(root) and root_problem(root, splits) is None


def read_split(root, split):
    """Scene ids of a split, in file order. Missing split file or scene folder: ScanNetError."""
    if split not in SPLITS:
        raise ScanNetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    path = split_path(root, split)
    if not os.path.isfile(path):
        raise ScanNetError(f"{path}: split file not found")
    with open(path) as f:
        scenes = [line.strip() for line in f if line.strip()]
    for scene in scenes:
        if not os.path.isfile(mesh_path(root, scene)):
            raise ScanNetError(f"{path}: lists scene {scene!r} but {mesh_path(root, scene)} does not exist")
        if split != "test" and not os.path.isfile(labels_path(root, scene)):
            raise ScanNetError(f"{labels_path(root, scene)}: labels file missing for {split} scene {scene!r}")
    return scenes


def _read_vertices(path, fields):
    from plyfile import PlyData

    if not os.path.isfile(path):
        raise ScanNetError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            ply = PlyData.read(f)
        vertex = ply["vertex"]
        data = vertex.data
        if len(data) != vertex.count:
            raise ScanNetError(f"{path}: truncated (header says {vertex.count} vertices, {len(data)} read)")
    except ScanNetError:
        raise
    except KeyError:
        raise ScanNetError(f"{path}: no 'vertex' element") from None
    except Exception as exc:  # plyfile raises several types on malformed input
        raise ScanNetError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from exc
    names = data.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        raise ScanNetError(f"{path}: vertex property missing: {', '.join(missing)} (has {', '.join(names)})")
    return data


@dataclass
class Scene:
    name: str
    coords: np.ndarray  # (N, 3) float32
    colors: np.ndarray  # (N, 3) uint8
    labels: np.ndarray  # (N,) int16, 0..19 or IGNORE_LABEL


def read_scene(root, scene, with_labels=True):
    """Reads one scene's two PLYs (faces, if present, are ignored). Errors name the file."""
    mesh = _read_vertices(mesh_path(root, scene), ("x", "y", "z", "red", "green", "blue"))
    coords = np.stack([mesh["x"], mesh["y"], mesh["z"]], axis=1).astype(np.float32)
    colors = np.stack([mesh["red"], mesh["green"], mesh["blue"]], axis=1).astype(np.uint8)
    if not np.isfinite(coords).all():
        raise ScanNetError(f"{mesh_path(root, scene)}: non-finite vertex coordinates")
    if with_labels:
        lab = _read_vertices(labels_path(root, scene), ("label",))
        if len(lab) != len(mesh):
            raise ScanNetError(
                f"{labels_path(root, scene)}: {len(lab)} vertices, but {mesh_path(root, scene)} has {len(mesh)}")
        labels = map_nyu40(np.asarray(lab["label"]))
    else:
        labels = np.full(len(coords), IGNORE_LABEL, dtype=np.int16)
    return Scene(scene, coords, colors, labels)
