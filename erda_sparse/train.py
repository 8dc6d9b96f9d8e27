"""`python -m erda_sparse.train --scannet`: a MinkUNet with the ERDA pseudo-label head, trained from weak
labels on ScanNet v2 (or, when none is found, on synthetic rooms in the same layout).

Loss: cross-entropy on the labeled voxels + w * ERDA on the unlabeled ones, one fused op
(`erda_sparse.ops.erda_loss(s, z, labels, erda_weight=w)`); `--loss ce` trains the supervised baseline.

Recipe on ScanNet (after Choy et al., CVPR 2019, and MinkowskiEngine's ScanNet example, as used by the
ERDA paper): MinkUNet34C, 2 cm voxels, SGD with momentum 0.9 and Nesterov, learning rate 0.1 with a poly
(power 0.9) schedule, weight decay 1e-4, batch 8, 300 epochs (about 45k iterations on the 1201 training
scenes). On the synthetic rooms the defaults are sized for a 2-core CPU: MinkUNet14A, 5 cm voxels,
batch 2, 20 epochs over 12 rooms.
"""
import os
import sys

if __name__ == "__main__":  # --threads must reach OpenMP before it starts, which is when torch is imported
    from .threads import preset_environment

    preset_environment(sys.argv[1:])

import argparse
import json
import math
import random
import signal
import time

import numpy as np
import torch

from . import cli
from . import distributed as ddp
from . import ops
from .checkpoint import CheckpointError, latest, listed, prune, save, step_path
from .errors import TrainingError, UsageError
from .data import IGNORE_LABEL, cache, scannet, synthetic, weak_labels
from .data.loader import VoxelScenes, collate, make_loader
from .metrics import confusion, scores, table
from .models import minkunet
from .engine.criterion import ErdaCriterion
from .engine.diagnostics import EpochDiagnostics
from .models.pseudo_head import PROTO_FEATURES, PROTO_INITS, PseudoLabelHead
from .runlog import RunLog
from .threads import set_threads

RECIPES = {
    "scannet": dict(model="MinkUNet34C", voxel_size=0.02, epochs=300, batch_size=8, lr=0.1, eval_every=10),
    "synthetic": dict(model="MinkUNet14A", voxel_size=0.05, epochs=20, batch_size=2, lr=0.1, eval_every=4),
}
SYNTHETIC_ROOMS = 12
MOMENTUM, WEIGHT_DECAY, POLY_POWER = 0.9, 1e-4, 0.9


def parse_args(argv=None):
    p = cli.Parser(prog="python -m erda_sparse.train", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    pos_int, pos_float, nonneg_float = cli.positive_int, cli.positive_float, cli.nonnegative_float
    p.add_argument("--scannet", action="store_true", help="train on ScanNet v2 semantic segmentation (20 classes)")
    p.add_argument("--data-root", default=None,
                   help="ScanNet v2 raw folder (default: $SCANNET_ROOT, else ./data/scannet, else synthetic rooms)")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--label-ratio", type=cli.finite_float(0.0, high=1.0), default=None,
                     help="share of each scene's points labeled, per class, in (0, 1] (default 0.01)")
    lab.add_argument("--labels-per-scene", type=pos_int, default=None, help="N labeled points per scene")
    lab.add_argument("--labels-per-class", type=pos_int, default=None, help="N labeled points per scene and class")
    lab.add_argument("--full-labels", action="store_true", help="every annotated point labeled")
    p.add_argument("--label-file", default=None, help="reuse the labeled points of an earlier run (its labels.npz)")
    p.add_argument("--model", default=None, choices=sorted(minkunet.FAMILY))
    p.add_argument("--voxel-size", type=pos_float, default=None, help="voxel edge in metres")
    p.add_argument("--epochs", type=pos_int, default=None)
    p.add_argument("--batch-size", type=pos_int, default=None, help="scenes per step (per process)")
    p.add_argument("--lr", type=pos_float, default=None, help="peak learning rate")
    p.add_argument("--workers", type=cli.nonnegative_int, default=0, help="data loader processes")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", default=None, help="run folder (default runs/<data>-<time>); must not hold another "
                   "run unless --resume")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--eval-every", type=pos_int, default=None, help="validate every K epochs (and at the end)")
    p.add_argument("--loss", default="erda", choices=("erda", "ce"))
    p.add_argument("--distance", default="kl", choices=ops.DISTANCES)
    p.add_argument("--entropy-weight", type=nonneg_float, default=1.0)
    p.add_argument("--erda-weight", type=nonneg_float, default=0.1)
    p.add_argument("--erda-points", default="unlabeled", choices=ops.ERDA_POINTS)
    p.add_argument("--detach-pseudo", action="store_true", help="no gradient into the pseudo-label head")
    p.add_argument("--erda-warmup", type=cli.nonnegative_int, default=0,
                   help="epochs over which the ERDA weight ramps up linearly from 0 (default 0: none)")
    p.add_argument("--pseudo-tau", type=pos_float, default=1.0, help="temperature of the pseudo logits cos / tau")
    p.add_argument("--proto-init", default="first", choices=PROTO_INITS,
                   help="prototypes start as a class's first batch mean, or random (Xavier)")
    p.add_argument("--proto-features", default="normalized", choices=PROTO_FEATURES,
                   help="the prototype EMA averages unit-length or raw projected features")
    p.add_argument("--proto-momentum", type=cli.finite_float(0.0, low_open=False, high=1.0), default=0.999)
    p.add_argument("--grad-clip", type=pos_float, default=None, help="clip the gradient norm at this value")
    p.add_argument("--with-xyz", action="store_true", help="add voxel coordinates to the colour features")
    p.add_argument("--ckpt-every", type=pos_int, default=None,
                   help="checkpoint every K steps too (default: epoch ends only)")
    p.add_argument("--keep", type=pos_int, default=3,
                   help="step checkpoints kept, newest first (each holds model and optimizer state: 64 MB for "
                   "MinkUNet14A, about 300 MB for MinkUNet34C); best.pt is kept besides")
    p.add_argument("--threads", type=pos_int, default=None,
                   help="CPU threads of every thread pool in the process (1 makes CPU runs bit-exact)")
    p.add_argument("--max-steps", type=pos_int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--dump-rank-state", default=None, help=argparse.SUPPRESS)
    p.add_argument("--synthetic-rooms", type=cli.int_at_least(2), default=SYNTHETIC_ROOMS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.scannet:
        p.error("the task flag is required: --scannet (ScanNet v2 semantic segmentation)")
    if args.resume and not args.out:
        p.error("--resume needs --out RUN, the folder of the run to continue")
    return args


def holds_a_run(folder):
    """Whether `folder` holds (part of) an earlier run: its config, labels, checkpoints."""
    return os.path.isdir(folder) and (bool(listed(folder)) or any(
        os.path.exists(os.path.join(folder, n)) for n in ("config.json", "best.pt", "metrics.jsonl")))


def check_out(args, lead=True):
    """--out, before any work: not a file, writable, holding no earlier run unless --resume, whose newest
    readable checkpoint it then returns as (path, state). Only the lead process judges the folder (the
    others would see what it writes)."""
    if args.resume:
        if not os.path.isdir(args.out):
            raise UsageError(f"--resume: --out {args.out} does not exist")
        try:
            return latest(args.out, report=print if lead else (lambda *a: None))
        except CheckpointError as exc:
            raise CheckpointError(f"--resume: {exc}") from None
    if lead and args.out is not None:
        if holds_a_run(args.out):
            raise UsageError(f"--out {args.out}: holds an earlier run (config, checkpoints or logs); pass --resume "
                             "to continue it, or choose another folder (nothing in it was changed)")
        cli.writable_folder(args.out, "--out")
    return None


def find_data(args):
    """(root, kind): --data-root, else $SCANNET_ROOT, else ./data/scannet when it holds ScanNet v2, else
    synthetic rooms (written once under the cache folder) after saying so. A path given by flag or variable
    that is not a ScanNet folder is an error saying what is missing in it."""
    for name, root in (("--data-root", args.data_root), ("$SCANNET_ROOT", os.environ.get("SCANNET_ROOT"))):
        if root:
            problem = scannet.root_problem(root)
            if problem:
                raise UsageError(f"{name} {root}: not a ScanNet v2 folder: {problem}")
            return os.path.abspath(root), "scannet"
    default = os.path.join(".", "data", "scannet")
    if scannet.is_scannet_root(default):
        return os.path.abspath(default), "scannet"
    root = os.path.join(cache.cache_base(), f"synthetic-rooms-{args.synthetic_rooms}")
    print(
        f"No ScanNet v2 data found (no --data-root, no $SCANNET_ROOT, nothing at {default}: a ScanNet folder holds "
        "scans/<scene>/<scene>_vh_clean_2.ply, <scene>_vh_clean_2.labels.ply and scannetv2_train.txt / "
        "scannetv2_val.txt). To train on ScanNet, request it at http://www.scan-net.org (its terms of use apply), "
        "download the v2 scans with their _vh_clean_2.ply and _vh_clean_2.labels.ply files and the split lists, "
        f"and pass --data-root or set $SCANNET_ROOT. Training on {args.synthetic_rooms} synthetic rooms in the same "
        f"layout instead ({root}).", flush=True)
    if not scannet.is_scannet_root(root):
        synthetic.write_dataset(root, rooms=args.synthetic_rooms, seed=0)
    return root, "synthetic"


def choose_labels(args, train_scenes, out_dir, preloaded=None):
    """The weak labels of the run: loaded from --label-file (or `preloaded`, what it held) or chosen by the
    protocol, and saved."""
    labels = {s.name: s.labels for s in train_scenes}
    path = os.path.join(out_dir, "labels.npz")
    if args.label_file:
        chosen, meta = preloaded or weak_labels.load(args.label_file)
        weak_labels.check_against(args.label_file, chosen, labels)
    else:
        if args.full_labels:
            protocol, value = "full", None
        elif args.labels_per_scene is not None:
            protocol, value = "per_scene", args.labels_per_scene
        elif args.labels_per_class is not None:
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
    inverse maps), and the per-point predictions when keep_pred. Under torchrun each process takes every
    world-th scene and the matrices are summed."""
    was_training = model.training
    model.eval()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if ddp.active() else (0, 1)
    ds = VoxelScenes(scenes[rank::world], None, voxel_size=voxel_size, train=False, with_xyz=with_xyz)
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
    model.train(was_training)
    return ddp.all_reduce(torch.from_numpy(cm)).numpy(), preds


class Net(torch.nn.Module):
    """The segmentation network and, for --loss erda, the pseudo-label head: one module for DDP."""

    def __init__(self, model, head):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x):
        feats, logits = self.model(x)
        if self.head is None:
            return logits.F, None, None
        g, s = self.head(feats.F)
        return logits.F, g, s


class StopRequest:
    """SIGINT / SIGTERM: finish the step, save a checkpoint, exit."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.signum = signum


def rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def main(argv=None):
    """The command line: 0 when the run ends, else the status of a one-line `error: ...`."""
    return cli.run(train, argv)


def train(argv=None):
    """Trains as the command-line flags say; returns {"best_miou", "out"}. Every flag, path and file is checked
    before any work: bad ones raise the project's errors (UsageError, ScanNetError, WeakLabelError,
    CheckpointError), each naming the flag or file."""
    args = parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to this process (use --device cpu)")
    rank, world, local_rank = ddp.setup(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    lead = rank == 0
    say = print if lead else (lambda *a, **k: None)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    try:
        resume = check_out(args, lead)
        preloaded = None
        if args.label_file:
            try:
                preloaded = weak_labels.load(args.label_file)
            except weak_labels.WeakLabelError as exc:
                raise weak_labels.WeakLabelError(f"--label-file {exc}") from None
        return _run(args, device, rank, world, lead, say, resume, preloaded)
    finally:
        ddp.cleanup()


def _run(args, device, rank, world, lead, say, resume, preloaded):
    if lead:
        root, kind = find_data(args)
    if ddp.active():  # rank 0 decides (and writes synthetic rooms if needed); the others follow
        box = [(root, kind) if lead else None]
        torch.distributed.broadcast_object_list(box, src=0)
        root, kind = box[0]
    recipe = RECIPES[kind]
    for key, value in recipe.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out_dir = args.out or os.path.join("runs", f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    if ddp.active():
        box = [out_dir]
        torch.distributed.broadcast_object_list(box, src=0)
        out_dir = box[0]
    if lead:
        cli.writable_folder(out_dir, "--out")
    if lead:
        cache.prepare(root, ("train", "val"), progress=sys.stdout.isatty())
    if ddp.active():
        torch.distributed.barrier()
    cache_dir, split_scenes = cache.prepare(root, ("train", "val"), progress=False)
    train_scenes = [cache.load(cache_dir, s) for s in split_scenes["train"]]
    val_scenes = [cache.load(cache_dir, s) for s in split_scenes["val"]]
    best_path = os.path.join(out_dir, "best.pt")

    resume_state = None
    if resume is not None:
        ckpt_path, resume_state = resume
        old = resume_state["config"]
        for key, flag, mine in (("data_root", "--data-root", root), ("model", "--model", args.model)):
            if old.get(key) != mine:
                raise CheckpointError(f"{ckpt_path}: --resume with {key} {mine!r}, but the run used {old.get(key)!r} "
                                      f"(drop {flag} or start a new run in another --out)")
        if args.label_file and os.path.abspath(args.label_file) != os.path.abspath(old["label_file"]):
            raise CheckpointError(f"{ckpt_path}: --resume with --label-file {args.label_file!r}, but the run used "
                                  f"{old['label_file']!r}")
        args.label_file = old["label_file"]
        preloaded = None

    if lead:
        chosen, label_meta, label_path = choose_labels(args, train_scenes, out_dir, preloaded)
    if ddp.active():
        torch.distributed.barrier()
    if not lead:
        label_path = os.path.join(out_dir, "labels.npz")
        chosen, label_meta = weak_labels.load(label_path)
    config = {**{k: v for k, v in vars(args).items() if k not in ("resume", "dump_rank_state")}, "data_root": root,
              "data_kind": kind, "cache_dir": cache_dir, "label_file": os.path.abspath(label_path),
              "labels": label_meta, "world_size": world, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
              "poly_power": POLY_POWER, "num_classes": scannet.NUM_CLASSES, "class_names": list(scannet.CLASS_NAMES)}
    if lead:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
    n_lab = sum(len(v) for v in chosen.values())
    n_pts = sum(len(s.labels) for s in train_scenes)
    say(f"{kind} data at {root}: {len(train_scenes)} train / {len(val_scenes)} val scenes; "
        f"{n_lab} labeled points of {n_pts} ({100 * n_lab / max(n_pts, 1):.3g}%, {label_meta['protocol']}); "
        f"model {args.model}, {args.voxel_size * 100:g} cm voxels, {args.epochs} epochs"
        + (f", {world} processes" if world > 1 else "") + f"; run folder {out_dir}", flush=True)

    in_ch = 6 if args.with_xyz else 3
    model = minkunet.build(args.model, in_ch, scannet.NUM_CLASSES)
    head = PseudoLabelHead(model.feature_dim, scannet.NUM_CLASSES, momentum=args.proto_momentum, tau=args.pseudo_tau,
                           proto_init=args.proto_init, proto_features=args.proto_features) \
        if args.loss == "erda" else None
    net = Net(model, head)
    if world > 1:
        net = ddp.convert_sync_batchnorm(net, device.type)
    net = net.to(device)
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=args.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    train_ds = VoxelScenes(train_scenes, chosen, voxel_size=args.voxel_size, train=True, seed=args.seed,
                           with_xyz=args.with_xyz)
    steps_per_epoch = ddp.StepBatches(len(train_ds), args.batch_size, args.seed, 0, rank, world).steps()
    total_steps = max(1, args.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1 - t / total_steps) ** POLY_POWER)
    start_epoch, start_batch, step, best = 0, 0, 0, -1.0
    if resume_state is not None:
        net.model.load_state_dict(resume_state["model"])
        if head is not None:
            net.head.load_state_dict(resume_state["head"])
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        start_epoch, start_batch = resume_state["epoch"], resume_state["batch"]
        step, best = resume_state["step"], resume_state["best_miou"]
        set_rng_state(resume_state["rng"])
        say(f"resumed from {ckpt_path} at epoch {start_epoch + 1}, batch {start_batch} (step {step})", flush=True)
    dnet = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    criterion = ErdaCriterion(args.loss, args.distance, args.entropy_weight, args.erda_weight, args.erda_points,
                              args.detach_pseudo, all_reduce=ddp.all_reduce, world=world)
    warmup_steps = args.erda_warmup * steps_per_epoch

    def erda_weight_at(t):
        """--erda-weight, ramped up linearly over the first --erda-warmup epochs."""
        return args.erda_weight * min(1.0, (t + 1) / warmup_steps) if warmup_steps else args.erda_weight

    log = RunLog(out_dir, enabled=lead)
    reduce_fn = ddp.all_reduce if world > 1 else None
    stop = StopRequest()

    def checkpoint(epoch, batch):
        """epoch: the epoch in progress (or the next one, batch 0, at an epoch end)."""
        if not lead:
            return None
        bad = [name for name, t in net.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise TrainingError(f"step {step}: non-finite values in {bad[0]}" + (f" and {len(bad) - 1} more tensors"
                                if len(bad) > 1 else "") + "; no checkpoint written, the newest good one is kept in "
                                f"{out_dir} (a lower --lr may help)")
        state = {"model": net.model.state_dict(), "head": net.head.state_dict() if head is not None else None,
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "batch": batch,
                 "step": step, "best_miou": best, "config": config, "rng": rng_state()}
        path = step_path(out_dir, step)
        save(state, path)
        prune(out_dir, args.keep)
        return state

    from tqdm import tqdm

    curves = None
    dnet.train()
    exit_signal = None
    done = False
    for epoch in range(start_epoch, args.epochs):
        train_ds.set_epoch(epoch)
        first = start_batch if epoch == start_epoch else 0
        sampler = ddp.StepBatches(len(train_ds), args.batch_size, args.seed, epoch, rank, world, start=first)
        loader = torch.utils.data.DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=args.workers)
        sums = {"loss": 0.0}
        diag = EpochDiagnostics()
        n_batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, file=sys.stdout,
                   disable=not (lead and sys.stdout.isatty()))
        t0 = time.perf_counter()
        points = 0
        for i, batch in enumerate(bar, start=first):
            labels = batch["labels"].to(device)
            z, g, s = dnet(sparse_input(batch, device))
            criterion.erda_weight = erda_weight_at(step)
            terms = criterion(s, z, labels)
            total = ddp.all_reduce(terms.total.detach().cpu()).item() / world
            if not math.isfinite(total):
                raise TrainingError(
                    f"step {step + 1} (epoch {epoch + 1}, batch {i + 1}): the training loss is {total}; the run "
                    f"stopped before this step changed anything, and the newest good checkpoint is kept in {out_dir} "
                    "(a lower --lr may help)")
            diag.watch(s, z, terms)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
            sched.step()
            if head is not None:
                net.head.update_prototypes(g, labels, reduce_fn=reduce_fn)
            diag.step(s, z, terms, batch["full_labels"].to(device))
            ce, er = terms.ce, terms.erda
            step += 1
            n_batches += 1
            points += len(batch["coords"])
            sums["loss"] += total
            rate = points * world / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{total:.3f}", ce=f"{ce:.3f}", erda=f"{er:.3f}", lr=f"{sched.get_last_lr()[0]:.4f}",
                            vox_s=f"{rate:.0f}")
            log.record("train_step", step, loss=total, ce=ce, erda=er, lr=sched.get_last_lr()[0])
            flag = ddp.all_reduce(torch.tensor([float(stop.signum or 0)])).item() if world > 1 else (stop.signum or 0)
            if flag:
                exit_signal = stop.signum or signal.SIGTERM
                checkpoint(epoch, i + 1)
                say(f"stopping on signal {int(exit_signal)}: checkpoint at step {step} saved", flush=True)
                break
            if args.max_steps and step >= args.max_steps:
                done = True
            if args.ckpt_every and step % args.ckpt_every == 0 and i + 1 < steps_per_epoch and not done:
                checkpoint(epoch, i + 1)
            if done:
                break
        if exit_signal:
            break
        means = {k: v / max(n_batches, 1) for k, v in sums.items()}
        means.update(diag.summary(net.head if head is not None else None))
        log.record("train_epoch", step, epoch=epoch + 1, **means, seconds=time.perf_counter() - t0)
        pseudo = (f"; unlabeled accuracy p {100 * means['pseudo_acc']:.1f}% q {100 * means['seg_acc']:.1f}%, "
                  f"max p {means['max_p']:.2f}" if "pseudo_acc" in means else
                  f"; unlabeled accuracy q {100 * means['seg_acc']:.1f}%" if "seg_acc" in means else "")
        say(f"epoch {epoch + 1}/{args.epochs}: loss {means['loss']:.4f} (ce {means.get('ce', float('nan')):.4f}, erda "
            f"{means.get('erda', float('nan')):.4f}){pseudo}, lr {sched.get_last_lr()[0]:.4f}, "
            f"{points * world / (time.perf_counter() - t0):.0f} voxels/s", flush=True)
        last_epoch = done or epoch + 1 == args.epochs
        improved = None
        if (epoch + 1) % args.eval_every == 0 or last_epoch:
            cm, _ = evaluate(net.model, val_scenes, args.voxel_size, device, args.with_xyz)
            sc = scores(cm)
            log.record("val", step, epoch=epoch + 1, miou=sc["miou"], macc=sc["macc"], oa=sc["oa"])
            say(table(sc, scannet.CLASS_NAMES), flush=True)
            if sc["miou"] > best:
                best, improved = sc["miou"], sc
        state = checkpoint(epoch + 1, 0)
        if improved is not None and lead:
            save({**state, "scores": improved}, best_path)
        curves = log.plot()
        if done:
            break
    if args.dump_rank_state:
        os.makedirs(args.dump_rank_state, exist_ok=True)
        torch.save({"model": net.model.state_dict(), "head": net.head.state_dict() if head is not None else None},
                   os.path.join(args.dump_rank_state, f"rank{rank}.pt"))
    log.close()
    if exit_signal:
        sys.exit(128 + int(exit_signal))
    say(f"done: best validation mIoU {100 * best:.2f}% ({best_path}); "
        + (f"curves in {curves}" if curves else f"no curves.png: {log.plot_missing}"))
    return {"best_miou": best, "out": out_dir}


if __name__ == "__main__":
    sys.exit(main())
