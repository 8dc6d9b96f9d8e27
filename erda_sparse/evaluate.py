"""`python -m erda_sparse.evaluate --ckpt F [--data-root DIR] [--split val]`: evaluates a checkpoint at full
resolution (voxel logits mapped back to every original point), prints the per-class IoU table, writes the
metrics as JSON and each scene's prediction as a PLY coloured with the ScanNet benchmark palette."""
import argparse
import json
import os
import sys

import numpy as np
import torch

from .checkpoint import CheckpointError, load
from .data import cache, scannet
from .metrics import scores, table
from .models import minkunet


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
    from .train import evaluate

    p = argparse.ArgumentParser(prog="python -m erda_sparse.evaluate", description=__doc__)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data-root", default=None, help="default: the data root the checkpoint was trained on")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--out", default=None, help="default: <checkpoint folder>/eval-<split>")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--no-ply", action="store_true", help="skip writing the prediction PLYs")
    args = p.parse_args(argv)
    try:
        state = load(args.ckpt)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = state["config"]
    root = args.data_root or cfg["data_root"]
    if not scannet.is_scannet_root(root):
        print(f"error: {root}: not a ScanNet v2 folder (scans/ and split lists)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    model = minkunet.build(cfg["model"], 6 if cfg.get("with_xyz") else 3, cfg["num_classes"]).to(device)
    model.load_state_dict(state["model"])
    cache_dir, by_split = cache.prepare(root, (args.split,), progress=False)
    scenes = [cache.load(cache_dir, s) for s in by_split[args.split]]
    cm, preds = evaluate(model, scenes, cfg["voxel_size"], device, cfg.get("with_xyz", False), cfg["num_classes"],
                         keep_pred=True)
    sc = scores(cm)
    print(f"{args.ckpt} on the {args.split} split of {root} ({len(scenes)} scenes)")
    print(table(sc, scannet.CLASS_NAMES))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.ckpt)), f"eval-{args.split}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"checkpoint": os.path.abspath(args.ckpt), "data_root": root, "split": args.split,
                   "class_names": list(scannet.CLASS_NAMES), "confusion": cm.tolist(), **sc}, f, indent=1)
    if not args.no_ply:
        for s in scenes:
            write_prediction_ply(os.path.join(out, f"{s.name}_pred.ply"), s, preds[s.name])
    print(f"metrics and {'no ' if args.no_ply else ''}prediction PLYs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
