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
import random
import time

import numpy as np
import torch

from . import cli, ops
from . import distributed as ddp
from .checkpoint import CheckpointError, latest, listed
from .config import DEFAULTS, RECIPES, RUNTIME_FIELDS, Config, check_resume
from .data import cache, scannet, synthetic, weak_labels
from .engine.trainer import Trainer
from .errors import UsageError
from .models import minkunet
from .models.pseudo_head import PROTO_FEATURES, PROTO_INITS
from .threads import set_threads

SYNTHETIC_ROOMS = 12


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
    lab.add_argument("--full-labels", action="store_true", default=None, help="every annotated point labeled")
    p.add_argument("--label-file", default=None, help="reuse the labeled points of an earlier run (its labels.npz)")
    p.add_argument("--model", default=None, choices=sorted(minkunet.FAMILY))
    p.add_argument("--voxel-size", type=pos_float, default=None, help="voxel edge in metres")
    p.add_argument("--epochs", type=pos_int, default=None)
    p.add_argument("--batch-size", type=pos_int, default=None, help="scenes per step (per process)")
    p.add_argument("--lr", type=pos_float, default=None, help="peak learning rate")
    p.add_argument("--workers", type=cli.nonnegative_int, default=0, help="data loader processes")
    p.add_argument("--seed", type=cli.nonnegative_int, default=None, help="default 0")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--out", default=None, help="run folder (default runs/<data>-<time>); must not hold another "
                   "run unless --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint, with its settings (recipe flags "
                   "given again must match; runtime flags may change)")
    p.add_argument("--extend", action="store_true",
                   help="with --resume and a larger --epochs: train longer, the learning rate decaying from where "
                   "it is to 0 at the new end")
    p.add_argument("--eval-every", type=pos_int, default=None, help="validate every K epochs (and at the end)")
    p.add_argument("--loss", default=None, choices=("erda", "ce"), help="default erda")
    p.add_argument("--distance", default=None, choices=ops.DISTANCES, help="default kl")
    p.add_argument("--entropy-weight", type=nonneg_float, default=None, help="lambda, default 1")
    p.add_argument("--erda-weight", type=nonneg_float, default=None, help="w, default 0.1")
    p.add_argument("--erda-points", default=None, choices=ops.ERDA_POINTS, help="default unlabeled")
    p.add_argument("--detach-pseudo", action="store_true", default=None, help="no gradient into the pseudo-label head")
    p.add_argument("--erda-warmup", type=cli.nonnegative_int, default=None,
                   help="epochs over which the ERDA weight ramps up linearly from 0 (default 0: none)")
    p.add_argument("--pseudo-tau", type=pos_float, default=None,
                   help="temperature of the pseudo logits cos / tau (default 1)")
    p.add_argument("--proto-init", default=None, choices=PROTO_INITS,
                   help="prototypes start as a class's first batch mean, or random (Xavier)")
    p.add_argument("--proto-features", default=None, choices=PROTO_FEATURES,
                   help="the prototype EMA averages unit-length or raw projected features")
    p.add_argument("--proto-momentum", type=cli.finite_float(0.0, low_open=False, high=1.0), default=None,
                   help="momentum of the prototypes' EMA (default: auto, 1 - 10 / total steps within [0.5, 0.999])")
    p.add_argument("--grad-clip", type=pos_float, default=None, help="clip the gradient norm at this value")
    p.add_argument("--with-xyz", action="store_true", default=None, help="add voxel coordinates to the colour features")
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
    if args.extend and not (args.resume and args.epochs):
        p.error("--extend goes with --resume and --epochs E (the new, larger number of epochs)")
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
    if lead and args.out is None and not os.access(os.getcwd(), os.W_OK):
        raise UsageError(f"no --out: the run folder would go under ./runs, but {os.getcwd()} cannot be written; "
                         "give --out")
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


def label_protocol(args):
    """(protocol, value) the label flags ask for, or None when none was given."""
    if args.full_labels:
        return "full", None
    for flag, protocol in (("labels_per_scene", "per_scene"), ("labels_per_class", "per_class"),
                           ("label_ratio", "ratio")):
        if getattr(args, flag) is not None:
            return protocol, getattr(args, flag)
    return None


def given_fields(args):
    """The Config fields set on the command line (recipe and runtime), by their Config names."""
    names = set(DEFAULTS) | set(RECIPES["scannet"]) | set(RUNTIME_FIELDS)
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None and k != "out"}


def new_config(args, root, kind, world, preloaded):
    """The Config of a new run: the flags given, then the recipe of the data kind, then the defaults."""
    fields = {**DEFAULTS, **RECIPES[kind], **given_fields(args)}
    if preloaded is not None:
        labels = {k: preloaded[1][1][k] for k in ("protocol", "value", "seed")}
    else:
        protocol, value = label_protocol(args) or ("ratio", 0.01)
        labels = {"protocol": protocol, "value": value, "seed": fields["seed"]}
    return Config(data_root=root, data_kind=kind, labels=labels,
                  label_file=os.path.abspath(os.path.join(args.out, "labels.npz")), world_size=world,
                  num_classes=scannet.NUM_CLASSES, class_names=tuple(scannet.CLASS_NAMES),
                  **{k: v for k, v in fields.items() if k not in RUNTIME_FIELDS},
                  **{k: getattr(args, k) for k in RUNTIME_FIELDS})


def resumed_config(args, ckpt_path, state, world):
    """The run's saved Config with the runtime flags given now; every recipe flag given with another value
    is an error listing them."""
    try:
        saved = Config.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"--resume: {ckpt_path} was written by an incompatible version ({exc}); start a "
                              "new run in another --out") from None
    given = {**given_fields(args), "world_size": world}
    if args.data_root:  # otherwise the run's own data root ($SCANNET_ROOT is not consulted)
        given["data_root"] = os.path.abspath(args.data_root)
    if args.label_file:
        given["label_file"] = os.path.abspath(args.label_file)
    protocol = label_protocol(args)
    if protocol and [protocol[0], protocol[1]] != [saved.labels.get("protocol"), saved.labels.get("value")]:
        given["labels"] = {**saved.labels, "protocol": protocol[0], "value": protocol[1]}
    return check_resume(saved.replace(out=args.out), given, extend=args.extend)


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
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to this process (use --device cpu)")
    rank, world, local_rank = ddp.setup(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    lead = rank == 0
    say = print if lead else (lambda *a, **k: None)
    try:
        resume = check_out(args, lead)
        preloaded = None
        if args.label_file and not resume:
            try:
                preloaded = (args.label_file, weak_labels.load(args.label_file))
            except weak_labels.WeakLabelError as exc:
                raise weak_labels.WeakLabelError(f"--label-file {exc}") from None
        if resume:
            config = resumed_config(args, *resume, world)
        else:
            root, kind = find_data(args) if lead else (None, None)
            args.out = args.out or os.path.join("runs", f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
            if ddp.active():  # rank 0 decides (and writes synthetic rooms if needed); the others follow
                box = [(root, kind, args.out)]
                torch.distributed.broadcast_object_list(box, src=0)
                root, kind, args.out = box[0]
            if lead:
                cli.writable_folder(args.out, "--out")
            config = new_config(args, root, kind, world, preloaded)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)
        trainer = Trainer(config, device, rank, world, resume_state=resume, preloaded_labels=preloaded,
                          extend_to=args.epochs if args.extend else None, say=say,
                          dump_rank_state=args.dump_rank_state)
        return trainer.fit()
    finally:
        ddp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
