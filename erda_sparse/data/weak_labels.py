"""Weak-label protocols: which annotated points keep their label for a run.

Chosen once per run on the full-resolution points, seeded, and saved to a file so that two runs compare
on the same labels (`--label-file`). Per scene (its labels y, annotated where y >= 0):
  ratio r       for each class k present with N_k points: max(floor(r * N_k), 1) of them  (1%, 0.1%, ...)
  per_class n   n points of each class present (all of them when fewer)
  per_scene n   n points drawn uniformly over the annotated points (ScanNet's data-efficient 20/50/100/200)
  full          every annotated point
Points not chosen become unlabeled (IGNORE_LABEL) for the supervised loss and count as unlabeled for
ERDA; points that were unannotated in the data stay unlabeled.
"""
import json
import os
import tempfile
import zlib

import numpy as np

from ..errors import ErdaError
from . import IGNORE_LABEL

PROTOCOLS = ("ratio", "per_class", "per_scene", "full")


class WeakLabelError(ErdaError, ValueError):
    """A bad weak-label protocol or label file; the message names the file."""


def _check(protocol, value):
    if protocol not in PROTOCOLS:
        raise WeakLabelError(f"unknown weak-label protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    if protocol == "ratio" and not (0 < float(value) <= 1):
        raise WeakLabelError(f"label ratio must be in (0, 1], got {value!r}")
    if protocol in ("per_class", "per_scene") and (int(value) != value or int(value) < 1):
        raise WeakLabelError(f"{protocol} needs a positive whole number of points, got {value!r}")


def scene_rng(seed, scene):
    """A generator that depends on the seed and the scene only (not on the order scenes are visited)."""
    return np.random.default_rng([int(seed), zlib.crc32(scene.encode())])


def choose(labels, protocol, value=None, rng=None):
    """Sorted int64 indices of the points that keep their label."""
    _check(protocol, value)
    labels = np.asarray(labels)
    annotated = np.flatnonzero(labels >= 0)
    if protocol == "full":
        return annotated.astype(np.int64)
    if protocol == "per_scene":
        n = min(int(value), len(annotated))
        return np.sort(rng.choice(annotated, size=n, replace=False)).astype(np.int64)
    chosen = []
    for k in np.unique(labels[annotated]):
        idx = annotated[labels[annotated] == k]
        n = max(int(np.floor(float(value) * len(idx))), 1) if protocol == "ratio" else min(int(value), len(idx))
        chosen.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def choose_all(scenes_labels, protocol, value=None, seed=0):
    """{scene: labels} -> {scene: chosen indices}."""
    return {scene: choose(lab, protocol, value, scene_rng(seed, scene)) for scene, lab in scenes_labels.items()}


def apply(labels, indices):
    """The weak labels: labels at the chosen indices, IGNORE_LABEL elsewhere."""
    out = np.full(len(labels), IGNORE_LABEL, dtype=np.int16)
    out[indices] = labels[indices]
    return out


def save(path, chosen, protocol, value, seed):
    """Writes the chosen indices (one array per scene) and how they were chosen, atomically."""
    meta = json.dumps({"protocol": protocol, "value": value, "seed": seed, "format": 1})
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".labels.", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.array(meta), **{f"scene/{k}": v for k, v in chosen.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


NOT_A_LABEL_FILE = "not a weak-label file (expected the labels.npz that a run writes, as --label-file takes)"


def load(path):
    """(chosen indices by scene, metadata dict). WeakLabelError naming the file when it is missing or is not
    a label file written by `save`."""
    if not os.path.isfile(path):
        raise WeakLabelError(f"{path}: label file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception:  # a pickle, a torch file, text, ...: np.load's own reasons mislead
        raise WeakLabelError(f"{path}: {NOT_A_LABEL_FILE}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise WeakLabelError(f"{path}: a single .npy array, {NOT_A_LABEL_FILE}")
    with archive as f:
        if "__meta__" not in f.files:
            raise WeakLabelError(f"{path}: an archive without the __meta__ entry, {NOT_A_LABEL_FILE}")
        try:
            meta = json.loads(str(f["__meta__"]))
            chosen = {k[len("scene/"):]: f[k] for k in f.files if k.startswith("scene/")}
        except Exception as exc:
            raise WeakLabelError(f"{path}: damaged label file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or not {"protocol", "value", "seed"} <= set(meta):
        raise WeakLabelError(f"{path}: its __meta__ entry lacks protocol, value or seed; {NOT_A_LABEL_FILE}")
    for scene, idx in chosen.items():
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise WeakLabelError(f"{path}: scene {scene!r} holds {idx.dtype} of shape {idx.shape}, not point indices")
    return {k: v.astype(np.int64) for k, v in chosen.items()}, meta


def check_against(path, chosen, scenes_labels):
    """Verifies that a loaded label file covers the scenes and fits their point counts."""
    for scene, labels in scenes_labels.items():
        if scene not in chosen:
            raise WeakLabelError(f"{path}: no labels chosen for scene {scene!r}")
        idx = chosen[scene]
        if len(idx) and (idx.min() < 0 or idx.max() >= len(labels)):
            raise WeakLabelError(f"{path}: indices of scene {scene!r} out of range for its {len(labels)} points")
        if len(idx) and (labels[idx] < 0).any():
            raise WeakLabelError(f"{path}: scene {scene!r} has chosen points that are not annotated in the data")
