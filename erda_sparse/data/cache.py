"""The preprocessing cache: one compact file per scene (coords float32, colours uint8, labels int16),
built once from the raw PLYs, rebuilt when a source file changes (size or modification time).

Default location: $ERDA_CACHE_DIR, else ~/.cache/erda_sparse/<name of the data root>-<hash of its path>,
so a read-only data root works.
"""
import hashlib
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import scannet

CACHE_VERSION = 1


def cache_base():
    return os.environ.get("ERDA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "erda_sparse")


def default_cache_dir(root):
    base = cache_base()
    root = os.path.abspath(root)
    tag = hashlib.sha1(root.encode()).hexdigest()[:10]
    return os.path.join(base, f"{os.path.basename(root.rstrip(os.sep)) or 'root'}-{tag}")


def _source_stamp(root, scene, with_labels):
    paths = [scannet.mesh_path(root, scene)] + ([scannet.labels_path(root, scene)] if with_labels else [])
    stamp = []
    for p in paths:
        st = os.stat(p)
        stamp += [st.st_size, st.st_mtime_ns]
    return np.array([CACHE_VERSION] + stamp, dtype=np.int64)


def cache_path(cache_dir, scene):
    return os.path.join(cache_dir, f"{scene}.npz")


def is_fresh(root, scene, cache_dir, with_labels=True):
    path = cache_path(cache_dir, scene)
    if not os.path.isfile(path):
        return False
    try:
        with np.load(path) as f:
            return np.array_equal(f["source"], _source_stamp(root, scene, with_labels))
    except Exception:  # unreadable or partial: rebuild
        return False


def build_one(root, scene, cache_dir, with_labels=True):
    """Reads the raw scene and writes its cache file atomically; returns the point count."""
    s = scannet.read_scene(root, scene, with_labels=with_labels)
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{scene}.", suffix=".npz", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, coords=s.coords, colors=s.colors, labels=s.labels,
                     source=_source_stamp(root, scene, with_labels))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, cache_path(cache_dir, scene))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(s.coords)


def load(cache_dir, scene):
    """The cached arrays of one scene as a scannet.Scene."""
    with np.load(cache_path(cache_dir, scene)) as f:
        return scannet.Scene(scene, f["coords"], f["colors"], f["labels"])


def prepare(root, splits=("train", "val"), cache_dir=None, workers=None, progress=True):
    """Builds the missing or stale cache files of the given splits, in parallel. Returns (cache_dir, scenes
    by split)."""
    cache_dir = cache_dir or default_cache_dir(root)
    by_split = {split: scannet.read_split(root, split) for split in splits}
    todo = []
    for split, scenes in by_split.items():
        for scene in scenes:
            if not is_fresh(root, scene, cache_dir, with_labels=split != "test"):
                todo.append((scene, split != "test"))
    if todo:
        workers = workers or min(len(todo), os.cpu_count() or 1)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"preparing {len(todo)} scene(s) -> {cache_dir}", unit="scene")
        if workers <= 1:
            for scene, lab in todo:
                build_one(root, scene, cache_dir, lab)
                bar and bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(build_one, root, scene, cache_dir, lab) for scene, lab in todo]
                for fut in futures:
                    fut.result()  # re-raises a worker's ScanNetError with its message
                    bar and bar.update()
        bar and bar.close()
    return cache_dir, by_split
