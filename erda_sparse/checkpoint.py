"""Checkpoints written atomically (temporary file in the same folder, fsync, rename): a crash leaves the
previous file intact, never a half-written one. A run keeps its newest step checkpoints
(ckpt-<step>.pt) and the best one (best.pt)."""
import os
import tempfile

import torch

from .errors import ErdaError


def save(state, path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CheckpointError(ErdaError, RuntimeError):
    """A checkpoint that is missing, unreadable, not one of ours, or not for this run."""


def load(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


RUN_CONFIG_KEYS = ("model", "voxel_size", "num_classes")


def load_run_checkpoint(path, map_location="cpu"):
    """A checkpoint of an erda_sparse run (a ckpt-<step>.pt or best.pt): CheckpointError naming the file when
    it is missing, unreadable or some other torch file."""
    state = load(path, map_location)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(
            state.get("config"), dict):
        raise CheckpointError(f"{path}: not an erda_sparse checkpoint (no model weights with a run config; "
                              "expected a run's best.pt or ckpt-<step>.pt)")
    missing = [k for k in RUN_CONFIG_KEYS if k not in state["config"]]
    if missing:
        raise CheckpointError(f"{path}: not an erda_sparse checkpoint (its config lacks {', '.join(missing)})")
    return state


def step_path(out_dir, step):
    return os.path.join(out_dir, f"ckpt-{step:08d}.pt")


def listed(out_dir):
    """The run's step checkpoints, newest first."""
    if not os.path.isdir(out_dir):
        return []
    names = sorted((n for n in os.listdir(out_dir) if n.startswith("ckpt-") and n.endswith(".pt")), reverse=True)
    return [os.path.join(out_dir, n) for n in names]


def latest(out_dir, map_location="cpu", report=print):
    """(path, state) of the newest checkpoint that loads; each unreadable newer one is reported by name and
    passed over. CheckpointError when there is none."""
    paths = listed(out_dir)
    for path in paths:
        try:
            return path, load_run_checkpoint(path, map_location)
        except CheckpointError as exc:
            report(f"warning: {exc}; trying the previous checkpoint")
    raise CheckpointError(f"{out_dir}: no readable checkpoint to resume from"
                          + (f" ({len(paths)} unreadable)" if paths else ""))


def prune(out_dir, keep):
    """Deletes all but the newest `keep` step checkpoints."""
    for path in listed(out_dir)[keep:]:
        os.unlink(path)
