"""`python -m erda_sparse.train --scannet`: a MinkUNet with the ERDA pseudo-label head, trained from weak
labels on ScanNet v2 (or, when none is found, on synthetic rooms in the same layout).

Loss: cross-entropy on the labeled voxels + w * ERDA on the unlabeled ones, one fused op
(`erda_sparse.ops.erda_loss(s, z, labels, erda_weight=w)`); `--loss ce` trains the supervised baseline.

Recipe on ScanNet (after Choy et al., CVPR 2019, and MinkowskiEngine's ScanNet example, as used by the
ERDA paper): MinkUNet34C, 2 cm voxels, SGD with momentum 0.9 and Nesterov, learning rate 0.1 with a poly
(power 0.9) schedule, weight decay 1e-4, batch 8, 300 epochs (about 45k iterations on the 1201 training
scenes). On the synthetic rooms the defaults are sized for a 2-core CPU: MinkUNet14A, 5 cm voxels,
batch 2, 24 epochs over 12 rooms.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from . import ops
from .checkpoint import CheckpointError, load, save
from .data import IGNORE_LABEL, cache, scannet, synthetic, weak_labels
from .data.loader import VoxelScenes, make_loader
from .metrics import confusion, scores, table
from .models import minkunet
from .models.pseudo_head import PseudoLabelHead
from .runlog import RunLog

RECIPES = {
    "scannet": dict(model="MinkUNet34C", voxel_size=0.02, epochs=300, batch_size=8, lr=0.1, eval_every=10),
    "synthetic": dict(model="MinkUNet14A", voxel_size=0.05, epochs=24, batch_size=2, lr=0.1, eval_every=4),
}
SYNTHETIC_ROOMS = 12
MOMENTUM, WEIGHT_DECAY, POLY_POWER = 0.9, 1e-4, 0.9


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m erda_sparse.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scannet", action="store_true", help="train on ScanNet v2 semantic segmentation (20 classes)")
    p.add_argument("--data-root", default=None, help="ScanNet v2 raw folder (default: $SCANNET_ROOT, ./data/scannet)")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--label-ratio", type=float, default=None, help="labels kept per scene and class (default 0.01)")
    lab.add_argument("--labels-per-scene", type=int, default=None)
    lab.add_argument("--labels-per-class", type=int, default=None)
    lab.add_argument("--full-labels", action="store_true")
    p.add_argument("--label-file", default=None, help="reuse the labeled points of an earlier run")
    p.add_argument("--model", default=None, choices=sorted(minkunet.FAMILY))
    p.add_argument("--voxel-size", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", default=None, help="run folder (default runs/<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--eval-every", type=int, default=None, help="validate every K epochs (and at the end)")
    p.add_argument("--loss", default="erda", choices=("erda", "ce"))
    p.add_argument("--distance", default="kl", choices=ops.DISTANCES)
    p.add_argument("--entropy-weight", type=float, default=1.0)
    p.add_argument("--erda-weight", type=float, default=0.1)
    p.add_argument("--erda-points", default="unlabeled", choices=ops.ERDA_POINTS)
    p.add_argument("--detach-pseudo", action="store_true")
    p.add_argument("--with-xyz", action="store_true", help="add voxel coordinates to the colour features")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke runs)")
    p.add_argument("--synthetic-rooms", type=int, default=SYNTHETIC_ROOMS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.scannet:
        p.error("the task flag is required: --scannet (ScanNet v2 semantic segmentation)")
    return args


def find_data(args):
    """(root, kind): the first of --data-root, $SCANNET_ROOT, ./data/scannet that holds ScanNet v2, else
    synthetic rooms (written once under the cache folder) after saying so."""
    candidates = [("--data-root", args.data_root), ("$SCANNET_ROOT", os.environ.get("SCANNET_ROOT")),
                  ("default", os.path.join(".", "data", "scannet"))]
    for _, root in candidates:
        if root and scannet.is_scannet_root(root):
            return os.path.abspath(root), "scannet"
    looked = "; ".join(f"{name} = {root}" for name, root in candidates if root)
    root = os.path.join(cache.cache_base(), f"synthetic-rooms-{args.synthetic_rooms}")
    print(
        f"No ScanNet v2 data found (looked at {looked}: a ScanNet folder holds scans/<scene>/<scene>_vh_clean_2.ply, "
        "<scene>_vh_clean_2.labels.ply and scannetv2_train.txt / scannetv2_val.txt). To train on ScanNet, request "
        "it at http://www.scan-net.org (its terms of use apply), download the v2 scans with their "
        "_vh_clean_2.ply and _vh_clean_2.labels.ply files and the split lists, and pass --data-root or set "
        f"$SCANNET_ROOT. Training on {args.synthetic_rooms} synthetic rooms in the same layout instead ({root}).",
        flush=True)
    if not scannet.is_scannet_root(root):
        synthetic.write_dataset(root, rooms=args.synthetic_rooms, seed=0)
    return root, "synthetic"


def choose_labels(args, train_scenes, out_dir):
    """The weak labels of the run: loaded from --label-file or chosen by the protocol, and saved."""
    labels = {s.name: s.labels for s in train_scenes}
    path = os.path.join(out_dir, "labels.npz")
    if args.label_file:
        chosen, meta = weak_labels.load(args.label_file)
        weak_labels.check_against(args.label_file, chosen, labels)
    else:
        if args.full_labels:
            protocol, value = "full", None
        elif args.labels_per_scene:
            protocol, value = "per_scene", args.labels_per_scene
        elif args.labels_per_class:
            protocol, value = "per_class", args.labels_per_class
        else:
            protocol, value = "ratio", args.label_ratio if args.label_ratio is not None else 0.01
        chosen = weak_labels.choose_all(labels, protocol, value, seed=args.seed)
        meta = {"protocol": protocol, "value": value, "seed": args.seed}
    weak_labels.save(path, chosen, meta["protocol"], meta["value"], meta["seed"])
    return chosen, meta, path


def sparse_input(batch, device):
    from .minkowski import ME

    return ME.SparseTensor(batch["feats"].to(device), coordinates=batch["coords"].to(device), device=device)


@torch.no_grad()
def evaluate(model, scenes, voxel_size, device, with_xyz=False, num_classes=scannet.NUM_CLASSES, keep_pred=False):
    """Confusion matrix over every original point of the scenes (voxel logits mapped back through the
    inverse maps), and the per-point predictions when keep_pred."""
    model.eval()
    ds = VoxelScenes(scenes, None, voxel_size=voxel_size, train=False, with_xyz=with_xyz)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    preds = {}
    for batch in make_loader(ds, batch_size=1, shuffle=False):
        _, logits = model(sparse_input(batch, device))
        for b in range(len(batch["scenes"])):
            lo = logits.F[batch["offsets"][b]:batch["offsets"][b + 1]]
            pred = lo.argmax(1).cpu()[batch["inverse"][b]].numpy()
            cm += confusion(pred, batch["point_labels"][b].numpy(), num_classes, IGNORE_LABEL)
            if keep_pred:
                preds[batch["scenes"][b]] = pred
    model.train()
    return cm, preds


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    root, kind = find_data(args)
    recipe = RECIPES[kind]
    for key, value in recipe.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out_dir = args.out or os.path.join("runs", f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")

    cache_dir, split_scenes = cache.prepare(root, ("train", "val"))
    train_scenes = [cache.load(cache_dir, s) for s in split_scenes["train"]]
    val_scenes = [cache.load(cache_dir, s) for s in split_scenes["val"]]
    last_path, best_path = os.path.join(out_dir, "last.pt"), os.path.join(out_dir, "best.pt")

    resume_state = None
    if args.resume:
        resume_state = load(last_path)
        old = resume_state["config"]
        for key in ("data_root", "model"):
            mine = root if key == "data_root" else args.model
            if old[key] != mine:
                raise CheckpointError(f"{last_path}: --resume with {key} {mine!r}, but the run used {old[key]!r}")
        if args.label_file and os.path.abspath(args.label_file) != os.path.abspath(old["label_file"]):
            raise CheckpointError(f"{last_path}: --resume with --label-file {args.label_file!r}, but the run used "
                                  f"{old['label_file']!r}")
        args.label_file = old["label_file"]

    chosen, label_meta, label_path = choose_labels(args, train_scenes, out_dir)
    config = {**{k: v for k, v in vars(args).items() if k != "resume"}, "data_root": root, "data_kind": kind,
              "cache_dir": cache_dir, "label_file": os.path.abspath(label_path), "labels": label_meta,
              "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "poly_power": POLY_POWER,
              "num_classes": scannet.NUM_CLASSES, "class_names": list(scannet.CLASS_NAMES)}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    n_lab = sum(len(v) for v in chosen.values())
    n_pts = sum(len(s.labels) for s in train_scenes)
    print(f"{kind} data at {root}: {len(train_scenes)} train / {len(val_scenes)} val scenes; "
          f"{n_lab} labeled points of {n_pts} ({100 * n_lab / max(n_pts, 1):.3g}%, {label_meta['protocol']}); "
          f"model {args.model}, {args.voxel_size * 100:g} cm voxels, {args.epochs} epochs; run folder {out_dir}",
          flush=True)

    in_ch = 6 if args.with_xyz else 3
    model = minkunet.build(args.model, in_ch, scannet.NUM_CLASSES).to(device)
    head = PseudoLabelHead(model.feature_dim, scannet.NUM_CLASSES).to(device) if args.loss == "erda" else None
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.SGD(params, lr=args.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    train_ds = VoxelScenes(train_scenes, chosen, voxel_size=args.voxel_size, train=True, seed=args.seed,
                           with_xyz=args.with_xyz)
    loader = make_loader(train_ds, args.batch_size, shuffle=True, workers=args.workers, seed=args.seed)
    total_steps = max(1, args.epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1 - t / total_steps) ** POLY_POWER)
    start_epoch, step, best = 0, 0, -1.0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        if head is not None:
            head.load_state_dict(resume_state["head"])
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        start_epoch, step, best = resume_state["epoch"], resume_state["step"], resume_state["best_miou"]
        torch.set_rng_state(resume_state["torch_rng"])
        print(f"resumed from {last_path} at epoch {start_epoch}", flush=True)
    log = RunLog(out_dir)

    def checkpoint_state(epoch):
        return {"model": model.state_dict(), "head": head.state_dict() if head is not None else None,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                "best_miou": best, "config": config, "torch_rng": torch.get_rng_state()}

    from tqdm import tqdm

    model.train()
    stop = False
    for epoch in range(start_epoch, args.epochs):
        train_ds.set_epoch(epoch)
        sums = {"loss": 0.0, "ce": 0.0, "erda": 0.0}
        n_batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, file=sys.stdout,
                   disable=not sys.stdout.isatty())
        t0 = time.perf_counter()
        points = 0
        for batch in bar:
            x = sparse_input(batch, device)
            labels = batch["labels"].to(device)
            feats, logits = model(x)
            z = logits.F
            if head is not None:
                g, s = head(feats.F)
                loss = ops.erda_loss(s, z, labels, distance=args.distance, entropy_weight=args.entropy_weight,
                                     erda_weight=args.erda_weight, erda_points=args.erda_points,
                                     detach_pseudo=args.detach_pseudo)
            else:
                s = z.detach()
                loss = ops.erda_loss(s, z, labels, erda_weight=0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if head is not None:
                head.update_prototypes(g, labels)
            with torch.no_grad():  # the two terms, for the record
                ce = ops.erda_loss(s.detach(), z.detach(), labels, erda_weight=0.0).item()
                er = ops.erda_loss(s.detach(), z.detach(), labels, ce_weight=0.0, distance=args.distance,
                                   entropy_weight=args.entropy_weight, erda_points=args.erda_points).item()
            step += 1
            n_batches += 1
            points += len(batch["coords"])
            sums["loss"] += loss.item()
            sums["ce"] += ce
            sums["erda"] += er
            rate = points / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.3f}", ce=f"{ce:.3f}", erda=f"{er:.3f}",
                            lr=f"{sched.get_last_lr()[0]:.4f}", vox_s=f"{rate:.0f}")
            log.record("train_step", step, loss=loss.item(), ce=ce, erda=er, lr=sched.get_last_lr()[0])
            if args.max_steps and step >= args.max_steps:
                stop = True
                break
        means = {k: v / max(n_batches, 1) for k, v in sums.items()}
        log.record("train_epoch", step, epoch=epoch + 1, **means, seconds=time.perf_counter() - t0)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {means['loss']:.4f} (ce {means['ce']:.4f}, erda "
              f"{means['erda']:.4f}), lr {sched.get_last_lr()[0]:.4f}, {points / (time.perf_counter() - t0):.0f} "
              "voxels/s", flush=True)
        last_epoch = stop or epoch + 1 == args.epochs
        if (epoch + 1) % args.eval_every == 0 or last_epoch:
            cm, _ = evaluate(model, val_scenes, args.voxel_size, device, args.with_xyz)
            sc = scores(cm)
            log.record("val", step, epoch=epoch + 1, miou=sc["miou"], macc=sc["macc"], oa=sc["oa"])
            print(table(sc, scannet.CLASS_NAMES), flush=True)
            if sc["miou"] > best:
                best = sc["miou"]
                save({**checkpoint_state(epoch + 1), "scores": sc}, best_path)
        save(checkpoint_state(epoch + 1), last_path)
        log.plot()
        if stop:
            break
    log.close()
    print(f"done: best validation mIoU {100 * best:.2f}% ({best_path}); curves in {os.path.join(out_dir, 'curves.png')}")
    return {"best_miou": best, "out": out_dir}


if __name__ == "__main__":
    main()
