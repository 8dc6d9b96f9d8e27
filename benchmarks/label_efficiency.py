"""Label efficiency: training arms side by side on the same data, the same weak labels and the same settings.

    python benchmarks/label_efficiency.py                      # ERDA, CE and full labels at 1%, seeds 0,1,2
    python benchmarks/label_efficiency.py --label-ratio 0.001  # at 0.1%
    python benchmarks/label_efficiency.py --arm "erda_t01=--loss erda --pseudo-tau 0.1"   # any other arm
    python benchmarks/label_efficiency.py --quick              # about a minute: a check that it all runs

Every arm is `python -m erda_sparse.train --scannet` with the common settings below plus its own flags. For
each seed the benchmark chooses the weak labels once (the trainer's protocols, seeded) and gives the same
label file to every weak-label arm; the `full` arm trains with every annotated point labeled. Runs go in
parallel processes (`--jobs`, one thread each by default), each in OUT/runs/<arm>-s<seed>; a finished run
is reused when the benchmark is run again with the same settings, so a long sweep can be resumed.

It prints, and writes to OUT/results.json and OUT/label_efficiency.png:
  per arm: best and final validation mIoU, mean and sample standard deviation over seeds, per seed;
  ERDA - CE: the paired difference per seed (same labels, same initialisation seed), mean and spread;
  full - CE: the gap the labels leave, the room a weak-label method has to win back (printed in every
  report: where it is small, the comparison measures nothing);
  the last epoch's diagnostics of each arm (pseudo-label accuracy, sharpness of p) and the curves.
"""
import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ARMS = {
    "erda": "--loss erda",
    "ce": "--loss ce",
    "full": "--loss ce --full-labels",
}
DEFAULTS = dict(model="MinkUNet14A", voxel_size=0.05, epochs=20, batch_size=2, lr=0.1, eval_every=2, rooms=12)
QUICK = dict(model="MinkUNet14A", voxel_size=0.1, epochs=2, batch_size=1, lr=0.1, eval_every=1, rooms=4)


def parse_args(argv=None):
    from erda_sparse import cli

    p = cli.Parser(prog="benchmarks/label_efficiency.py", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None, help="a ScanNet v2 folder (default: synthetic rooms)")
    p.add_argument("--arms", default="erda,ce,full", help=f"built-in arms to run, of {', '.join(ARMS)}")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=FLAGS",
                   help="another arm: a name and the trainer flags it adds (repeatable)")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--label-ratio", type=float, default=None, help="default 0.01")
    lab.add_argument("--labels-per-scene", type=int, default=None)
    lab.add_argument("--labels-per-class", type=int, default=None)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    p.add_argument("--model", default=None)
    p.add_argument("--voxel-size", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--synthetic-rooms", type=int, default=None, help="rooms when no --data-root (default 12)")
    p.add_argument("--train-flags", default="", help="flags added to every arm's trainer command")
    p.add_argument("--out", default=None, help="default: runs/label-efficiency-<protocol>")
    p.add_argument("--quick", action="store_true", help="4 rooms, 10 cm voxels, 2 epochs, seed 0: about a minute")
    args = p.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        attr = "synthetic_rooms" if key == "rooms" else key
        if getattr(args, attr) is None:
            setattr(args, attr, value)
    if args.quick and args.seeds == "0,1,2":
        args.seeds = "0"
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: comma-separated whole numbers, got {args.seeds!r}")
    arms = {}
    for name in (a.strip() for a in args.arms.split(",") if a.strip()):
        if name not in ARMS:
            p.error(f"--arms: unknown arm {name!r} (built in: {', '.join(ARMS)}; others with --arm NAME=FLAGS)")
        arms[name] = ARMS[name]
    for spec in args.arm:
        name, sep, flags = spec.partition("=")
        if not sep or not name.strip() or not name.replace("_", "").replace("-", "").isalnum():
            p.error(f"--arm: expected NAME=FLAGS with a plain name, got {spec!r}")
        arms[name.strip()] = flags
    if not arms:
        p.error("no arm to run")
    args.arm_flags = arms
    if args.label_ratio is not None and not 0 < args.label_ratio <= 1:
        p.error(f"--label-ratio must be in (0, 1], got {args.label_ratio}")
    for flag in ("labels_per_scene", "labels_per_class"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be a positive whole number")
    for flag in ("jobs", "threads", "epochs", "batch_size", "eval_every", "synthetic_rooms"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be a positive whole number")
    for flag in ("voxel_size", "lr"):
        if not (math.isfinite(getattr(args, flag)) and getattr(args, flag) > 0):
            p.error(f"--{flag.replace('_', '-')} must be a finite positive number")
    if args.labels_per_scene is not None:
        args.protocol, args.value = "per_scene", args.labels_per_scene
    elif args.labels_per_class is not None:
        args.protocol, args.value = "per_class", args.labels_per_class
    else:
        args.protocol, args.value = "ratio", args.label_ratio if args.label_ratio is not None else 0.01
    args.out = args.out or os.path.join("runs", f"label-efficiency-{args.protocol}-{args.value:g}")
    return args


def data_root(args):
    """The data root every arm trains on (synthetic rooms written once when none is given)."""
    from erda_sparse.data import cache, scannet, synthetic

    if args.data_root:
        problem = scannet.root_problem(args.data_root)
        if problem:
            sys.exit(f"error: --data-root {args.data_root}: not a ScanNet v2 folder: {problem}")
        return os.path.abspath(args.data_root)
    root = os.path.join(cache.cache_base(), f"synthetic-rooms-{args.synthetic_rooms}")
    if not scannet.is_scannet_root(root):
        synthetic.write_dataset(root, rooms=args.synthetic_rooms, seed=0)
    return root


def label_files(args, root):
    """One weak-label file per seed, shared by the weak-label arms."""
    from erda_sparse.data import cache, weak_labels

    cache_dir, by_split = cache.prepare(root, ("train", "val"), progress=False)
    labels = {s: cache.load(cache_dir, s).labels for s in by_split["train"]}
    files, shares = {}, {}
    for seed in args.seed_list:
        path = os.path.join(args.out, f"labels-s{seed}.npz")
        chosen = weak_labels.choose_all(labels, args.protocol, args.value, seed=seed)
        weak_labels.save(path, chosen, args.protocol, args.value, seed)
        files[seed] = os.path.abspath(path)
        annotated = sum(int((v >= 0).sum()) for v in labels.values())
        shares[seed] = (sum(len(v) for v in chosen.values()), annotated)
    return files, shares


def command(args, root, arm_flags, seed, label_file, out):
    cmd = [sys.executable, "-m", "erda_sparse.train", "--scannet", "--data-root", root, "--model", args.model,
           "--voxel-size", str(args.voxel_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--lr", str(args.lr), "--eval-every", str(args.eval_every), "--seed", str(seed), "--threads",
           str(args.threads), "--out", out]
    flags = shlex.split(arm_flags) + shlex.split(args.train_flags)
    if "--full-labels" not in flags:
        cmd += ["--label-file", label_file]
    return cmd + flags


def records(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def finished(out, cmd, epochs):
    """Whether `out` holds a finished run of exactly this command."""
    try:
        with open(os.path.join(out, "command.json")) as f:
            same = json.load(f) == cmd
    except (OSError, ValueError):
        return False
    vals = [r for r in records(out) if r["kind"] == "val"]
    return same and bool(vals) and vals[-1]["epoch"] == epochs


def run_one(job):
    name, seed, cmd, out, epochs = job
    if finished(out, cmd, epochs):
        return name, seed, 0, 0.0, True
    if os.path.isdir(out):  # an unfinished or different earlier run: start it again
        for entry in os.listdir(out):
            p = os.path.join(out, entry)
            if os.path.isfile(p):
                os.unlink(p)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(out, "train.log"), "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if rc == 0:
        with open(os.path.join(out, "command.json"), "w") as f:
            json.dump(cmd, f)
    return name, seed, rc, time.time() - t0, False


def summarise(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def collect(args, outs):
    """Per arm and seed: best and final validation mIoU, the validation curve, the last epoch's diagnostics."""
    res = {}
    for (name, seed), out in outs.items():
        rec = records(out)
        vals = [r for r in rec if r["kind"] == "val"]
        epochs = [r for r in rec if r["kind"] == "train_epoch"]
        res.setdefault(name, {})[seed] = {
            "best": max((r["miou"] for r in vals), default=None),
            "final": vals[-1]["miou"] if vals else None,
            "curve": [(r["epoch"], r["miou"]) for r in vals],
            "last_epoch": {k: v for k, v in (epochs[-1] if epochs else {}).items() if k not in ("kind", "step")},
        }
    return res


def paired(res, a, b, key):
    """a - b per seed where both ran."""
    seeds = sorted(set(res.get(a, {})) & set(res.get(b, {})))
    diffs = [res[a][s][key] - res[b][s][key] for s in seeds
             if res[a][s][key] is not None and res[b][s][key] is not None]
    return summarise(diffs)


def pct(x):
    return "   -  " if x is None else f"{100 * x:6.2f}"


def report(args, res, shares):
    lines = []
    lab, total = shares[args.seed_list[0]]
    lines.append(f"label efficiency: {args.protocol} {args.value:g} ({lab} of {total} annotated training points "
                 f"labeled for seed {args.seed_list[0]}), {args.model}, {args.voxel_size * 100:g} cm voxels, "
                 f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, seeds {args.seeds}")
    lines.append(f"{'arm':<14} {'best mIoU':>18} {'final mIoU':>18}   per seed (best / final)")
    for name, per_seed in res.items():
        b = summarise([r["best"] for r in per_seed.values()])
        f = summarise([r["final"] for r in per_seed.values()])
        seeds = "  ".join(f"s{s}: {pct(r['best']).strip()}/{pct(r['final']).strip()}"
                          for s, r in sorted(per_seed.items()))
        lines.append(f"{name:<14} {pct(b['mean'])} ± {pct(b['std']).strip():>5}   {pct(f['mean'])} ± "
                     f"{pct(f['std']).strip():>5}   {seeds}")
    for a, b, what in (("full", "ce", "full - CE (the gap labels leave)"),) + tuple(
            (name, "ce", f"{name} - CE") for name in res if name not in ("ce", "full")):
        if a in res and b in res:
            d_best, d_final = paired(res, a, b, "best"), paired(res, a, b, "final")
            lines.append(f"{what:<34} best {pct(d_best['mean'])} ± {pct(d_best['std']).strip():>5} (min "
                         f"{pct(d_best['min']).strip()})   final {pct(d_final['mean'])} ± "
                         f"{pct(d_final['std']).strip():>5} (min {pct(d_final['min']).strip()})")
    lines.append("diagnostics of the last epoch (mean over seeds): unlabeled accuracy of argmax p / argmax q, "
                 "mean max p")
    for name, per_seed in res.items():
        last = [r["last_epoch"] for r in per_seed.values()]

        def m(key, last=last):
            vals = [x[key] for x in last if x.get(key) is not None]
            return statistics.fmean(vals) if vals else None
        max_p = m("max_p")
        lines.append(f"  {name:<12} p {pct(m('pseudo_acc'))}%   q {pct(m('seg_acc'))}%   max p "
                     + ("-" if max_p is None else f"{max_p:.3f}"))
    return "\n".join(lines)


def plot(args, res, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        print(f"no {path}: matplotlib cannot be imported ({exc})")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(res)
    for i, name in enumerate(names):
        finals = [100 * r["final"] for r in res[name].values() if r["final"] is not None]
        bests = [100 * r["best"] for r in res[name].values() if r["best"] is not None]
        for off, vals, label in ((-0.2, bests, "best"), (0.2, finals, "final")):
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0
                axes[0].bar(i + off, statistics.fmean(vals), 0.38, yerr=sd, capsize=4,
                            color="C0" if label == "best" else "C1", label=label if i == 0 else None)
                axes[0].plot([i + off] * len(vals), vals, "k.", ms=4)
        curves = [r["curve"] for r in res[name].values() if r["curve"]]
        if curves:
            epochs = sorted({e for c in curves for e, _ in c})
            mean = [statistics.fmean([m for c in curves for e2, m in c if e2 == e]) * 100 for e in epochs]
            axes[1].plot(epochs, mean, marker="o", ms=3, label=name)
    axes[0].set_xticks(range(len(names)), names)
    axes[0].set_ylabel("validation mIoU (%)")
    axes[0].set_title("mIoU per arm (bars: mean, whiskers: sd, dots: seeds)")
    axes[0].legend()
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation mIoU, mean over seeds")
    axes[1].legend()
    fig.suptitle(f"{args.protocol} {args.value:g}, {args.model}, {args.epochs} epochs, seeds {args.seeds}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    root = data_root(args)
    files, shares = label_files(args, root)
    jobs, outs = [], {}
    for seed in args.seed_list:
        for name, flags in args.arm_flags.items():
            out = os.path.abspath(os.path.join(args.out, "runs", f"{name}-s{seed}"))
            outs[(name, seed)] = out
            jobs.append((name, seed, command(args, root, flags, seed, files[seed], out), out, args.epochs))
    print(f"{len(jobs)} runs ({', '.join(args.arm_flags)} x seeds {args.seeds}), {args.jobs} at a time, "
          f"{args.threads} thread(s) each, in {args.out}", flush=True)
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, seed, rc, seconds, reused in pool.map(run_one, jobs):
            state = "reused" if reused else (f"{seconds / 60:.1f} min" if rc == 0 else f"FAILED (exit {rc})")
            print(f"  {name} seed {seed}: {state}", flush=True)
            if rc:
                failed.append(os.path.join(outs[(name, seed)], "train.log"))
    res = collect(args, outs)
    text = report(args, res, shares)
    print(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"settings": {k: v for k, v in vars(args).items() if k not in ("arm",)}, "data_root": root,
                   "labeled": {str(k): v for k, v in shares.items()}, "results": res, "report": text}, f, indent=1)
    png = plot(args, res, os.path.join(args.out, "label_efficiency.png"))
    print(f"results in {os.path.join(args.out, 'results.json')}" + (f" and {png}" if png else ""))
    if failed:
        print("failed runs (see their logs): " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
