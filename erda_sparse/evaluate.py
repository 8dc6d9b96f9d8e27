"""`python -m erda_sparse.evaluate --ckpt F [--data-root DIR] [--split val]`: evaluates a checkpoint at full
resolution (voxel logits mapped back to every original point), prints the per-class IoU table, writes the
metrics as JSON and each scene's prediction as a PLY coloured with the ScanNet benchmark palette."""
import json
import os
import sys

import numpy as np
import torch

from . import cli
from .checkpoint import CheckpointError, load_run_checkpoint
from .data import cache, scannet
from .engine.evaluator import evaluate
from .errors import UsageError
from .metrics import scores, table
from .models.segmentor import build_model


def write_prediction_ply(path, scene, pred):
    from plyfile import PlyData, PlyElement

    colors = scannet.colorize(pred)
    v = np.empty(len(pred), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                   ("blue", "u1"), ("label", "u2"), ("gt", "i2")])
    v["x"], v["y"], v["z"] = scene.coords.T
    v["red"], v["green"], v["blue"] = colors.T
    v["label"] = np.asarray(scannet.NYU40_IDS)[pred]  # NYU40 ids, as ScanNet's label files
    v["gt"] = scene.labels
    PlyData([PlyElement.describe(v, "vertex")]).write(path)


def main(argv=None):
    """The command line: 0 when the evaluation ends, else the status of a one-line `error: ...`."""
    return cli.run(run, argv)


def run(argv=None):
    p = cli.Parser(prog="python -m erda_sparse.evaluate", description=__doc__)
    p.add_argument("--ckpt", required=True, help="a run's best.pt or ckpt-<step>.pt")
    p.add_argument("--data-root", default=None, help="default: the data root the checkpoint was trained on")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--out", default=None, help="default: <checkpoint folder>/eval-<split>")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--no-ply", action="store_true", help="skip writing the prediction PLYs")
    args = p.parse_args(argv)
    try:
        state = load_run_checkpoint(args.ckpt)
    except CheckpointError as exc:
        raise CheckpointError(f"--ckpt {exc}") from None
    cfg = state["config"]
    root, flag = (args.data_root, "--data-root") if args.data_root else \
        (cfg.get("data_root"), "the checkpoint's data root")
    problem = scannet.root_problem(root, (args.split,)) if root else "none recorded in the checkpoint"
    if problem:
        raise UsageError(f"{flag} {root}: not a ScanNet v2 folder: {problem}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to this process (use --device cpu)")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), f"eval-{args.split}")
    cli.writable_folder(out, "--out")
    device = torch.device(args.device)
    model = build_model(cfg).backbone.to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"--ckpt {args.ckpt}: its weights do not fit a {cfg['model']} ({first})") from None
    cache_dir, by_split = cache.prepare(root, (args.split,), progress=False)
    scenes = [cache.load(cache_dir, s) for s in by_split[args.split]]
    cm, preds = evaluate(model, scenes, cfg["voxel_size"], device, cfg.get("with_xyz", False), cfg["num_classes"],
                         keep_pred=True)
    sc = scores(cm)
    print(f"{args.ckpt} on the {args.split} split of {root} ({len(scenes)} scenes)")
    print(table(sc, scannet.CLASS_NAMES))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"checkpoint": os.path.abspath(args.ckpt), "data_root": root, "split": args.split,
                   "class_names": list(scannet.CLASS_NAMES), "confusion": cm.tolist(), **sc}, f, indent=1)
    if not args.no_ply:
        for s in scenes:
            write_prediction_ply(os.path.join(out, f"{s.name}_pred.ply"), s, preds[s.name])
    print(f"metrics and {'no ' if args.no_ply else ''}prediction PLYs in {out}")


if __name__ == "__main__":
    sys.exit(main())
