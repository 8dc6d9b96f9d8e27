"""The recipes and one frozen Config per run.

The command line and a recipe (ScanNet or synthetic rooms) resolve once into a Config, written to
RUN/config.json and into every checkpoint. Its fields are of two kinds:

  recipe fields   what the run learns from and how: data, labels, model, voxels, schedule, loss, head options.
                  `--resume` takes them from the run; one given again with another value is an error that
                  lists every difference (extend a run's epochs with `--resume --epochs E --extend`, which
                  keeps the learning rate continuous: the poly decay restarts from the current rate to zero at
                  the new end).
  runtime fields  where and how fast it runs: device, workers, threads, out, keep, max steps, checkpoint
                  interval. They may change on resume.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field

from .errors import UsageError

RECIPES = {
    "scannet": dict(model="MinkUNet34C", voxel_size=0.02, epochs=300, batch_size=8, lr=0.1, eval_every=10),
    "synthetic": dict(model="MinkUNet14A", voxel_size=0.05, epochs=20, batch_size=2, lr=0.1, eval_every=4),
}
# Defaults of the recipe fields that do not depend on the data.
DEFAULTS = dict(loss="erda", distance="kl", entropy_weight=1.0, erda_weight=0.1, erda_points="unlabeled",
                detach_pseudo=False, with_xyz=False, seed=0, erda_warmup=0, pseudo_tau=1.0, proto_init="first",
                proto_features="normalized", proto_momentum=None, grad_clip=None)
# What runs made before a field existed ran with, where it differs from today's default.
EARLIER = {**DEFAULTS, "proto_momentum": 0.999}
MOMENTUM, WEIGHT_DECAY, POLY_POWER = 0.9, 1e-4, 0.9
RUNTIME_FIELDS = ("device", "workers", "threads", "out", "keep", "max_steps", "ckpt_every")


@dataclass(frozen=True)
class Config:
    # recipe
    data_root: str
    data_kind: str
    labels: dict            # how the weak labels were chosen: protocol, value, seed
    label_file: str         # the run's labels.npz (absolute)
    model: str
    voxel_size: float
    epochs: int
    batch_size: int         # per process
    world_size: int
    lr: float
    eval_every: int
    loss: str
    distance: str
    entropy_weight: float
    erda_weight: float
    erda_points: str
    detach_pseudo: bool
    with_xyz: bool
    seed: int
    erda_warmup: int
    pseudo_tau: float
    proto_init: str
    proto_features: str
    proto_momentum: float   # None in a new config: auto_proto_momentum(total steps), resolved by the trainer
    grad_clip: float = None
    # the learning-rate schedule, as segments [start step, start factor, end step]: one, unless extended
    schedule: tuple = ()
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY
    poly_power: float = POLY_POWER
    num_classes: int = 20
    class_names: tuple = ()
    # runtime
    device: str = "cpu"
    workers: int = 0
    threads: int = None
    out: str = ""
    keep: int = 3
    max_steps: int = None
    ckpt_every: int = None
    cache_dir: str = ""
    extra: dict = field(default_factory=dict)  # anything a newer version wrote that this one does not know

    @property
    def in_channels(self):
        return 6 if self.with_xyz else 3

    def lr_factor(self, step):
        """The learning rate at `step` over the peak: poly decay along the schedule's last segment that has
        begun."""
        start, factor, end = self.schedule[0]
        for seg in self.schedule:
            if seg[0] <= step:
                start, factor, end = seg
        return factor * max(0.0, 1 - (step - start) / max(end - start, 1)) ** self.poly_power

    def to_dict(self):
        d = dataclasses.asdict(self)
        d.update(d.pop("extra"))
        d["schedule"] = [list(s) for s in self.schedule]
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        # a run made before a field existed ran with that field's default
        known = {**{k: v for k, v in EARLIER.items() if k not in d},
                 **{k: v for k, v in d.items() if k in names and k != "extra"}}
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and f.name not in known]
        if missing:
            raise ValueError(f"the run's config lacks {', '.join(missing)}")
        known["schedule"] = tuple(tuple(s) for s in known.get("schedule", ()))
        known["class_names"] = tuple(known.get("class_names", ()))
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    def save(self, path):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Config)
                      if f.name not in RUNTIME_FIELDS + ("cache_dir", "extra", "schedule", "class_names"))


def recipe_differences(saved, given):
    """[(field, saved value, given value)] for each recipe field given on the command line (not None) whose
    value differs from the saved run's."""
    out = []
    for key, value in given.items():
        if key in RECIPE_FIELDS and value is not None:
            old = getattr(saved, key)
            if isinstance(old, float) or isinstance(value, float):
                same = old is not None and abs(float(old) - float(value)) <= 1e-12 * max(1.0, abs(float(old)))
            else:
                same = old == value
            if not same:
                out.append((key, old, value))
    return out


def check_resume(saved, given, extend=False):
    """The saved config with the runtime fields given now; UsageError listing every recipe field that differs
    (with --extend, a larger --epochs is allowed)."""
    given = dict(given)
    diffs = recipe_differences(saved, given)
    if extend:
        diffs = [d for d in diffs if d[0] != "epochs"]
        if given.get("epochs") is None or given["epochs"] <= saved.epochs:
            raise UsageError(f"--extend needs --epochs larger than the run's {saved.epochs}")
    if diffs:
        listed = "; ".join(f"--{k.replace('_', '-')} {v!r} (the run has {o!r})" for k, o, v in diffs)
        raise UsageError(f"--resume: the run in {saved.out} was made with other settings: {listed}. Drop these "
                         "flags to continue it as it was, or start a new run in another --out"
                         + (" (more epochs: --resume --epochs E --extend)" if any(k == "epochs" for k, _, _ in diffs)
                            else ""))
    runtime = {k: v for k, v in given.items() if k in RUNTIME_FIELDS and v is not None}
    return saved.replace(**runtime)


def auto_proto_momentum(total_steps):
    """The prototypes' EMA momentum for a run of `total_steps` steps: an averaging horizon 1 / (1 - m) of a
    tenth of the run, within [0.5, 0.999]. 0.999 (the ERDA paper's) averages over about 1000 steps, which a
    run of 100 steps (the synthetic default) never reaches: its prototypes stayed near the first batch's
    mean and the pseudo labels were 31% accurate against 64% with 0.9 (README, "Label efficiency")."""
    return min(0.999, max(0.5, 1.0 - 10.0 / max(total_steps, 1)))


def extend_schedule(config, epochs, step, steps_per_epoch):
    """The config with `epochs` epochs and a schedule segment from `step`: the poly decay restarts from the
    rate at `step` and reaches zero at the new end, so the rate is continuous."""
    segment = (step, config.lr_factor(step), epochs * steps_per_epoch)
    return config.replace(epochs=epochs, schedule=config.schedule + (segment,))
