"""The Trainer: one run, in named phases.

    prepare_data    the cache of the data root's scenes (the lead process builds it, the others wait)
    choose_labels   the run's weak labels: from the label file or the protocol, saved as RUN/labels.npz
    build           network, optimizer, schedule, criterion, training set, state, hooks
    restore         a checkpoint's state, when resuming (and a longer schedule with --extend)
    fit -> epoch -> step
    finish          hooks' last words, the closing line

The loop has one way out: `stop_reason` ("end", "max_steps" or "signal"). Hooks (engine/hooks.py) run after
each step and each epoch. The criterion (engine/criterion.py) computes the loss and its terms in one op call;
the diagnostics (engine/diagnostics.py) explain how the pseudo labels are doing.
"""
import math
import os
import signal
import sys
import time

import torch

from .. import distributed as ddp
from ..config import auto_proto_momentum
from ..data import cache, weak_labels
from ..data.loader import VoxelScenes, collate
from ..errors import TrainingError
from ..models.segmentor import build_model
from .criterion import ErdaCriterion
from .diagnostics import EpochDiagnostics
from .evaluator import sparse_input
from .hooks import CheckpointHook, RunLogHook, ValidationHook
from .state import TrainState


class StopRequest:
    """SIGINT / SIGTERM: the step in progress finishes, a checkpoint is saved, the run exits."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.signum = signum


class Trainer:
    def __init__(self, config, device, rank=0, world=1, resume_state=None, preloaded_labels=None, extend_to=None,
                 say=print, dump_rank_state=None):
        self.config, self.device, self.rank, self.world = config, device, rank, world
        self.lead = rank == 0
        self.say = say if self.lead else (lambda *a, **k: None)
        self.resume_state, self.preloaded, self.extend_to = resume_state, preloaded_labels, extend_to
        self.dump_rank_state = dump_rank_state
        self.out = config.out
        self.stop_reason, self.signum, self.improved, self.last_epoch = None, None, None, False
        self._bar = None

    # ---------------------------------------------------------------------------------------------------
    # phases

    def prepare_data(self):
        cfg = self.config
        if self.lead:
            cache.prepare(cfg.data_root, ("train", "val"), progress=sys.stdout.isatty())
        if ddp.active():
            torch.distributed.barrier()
        cache_dir, split = cache.prepare(cfg.data_root, ("train", "val"), progress=False)
        self.config = cfg.replace(cache_dir=cache_dir)
        self.train_scenes = [cache.load(cache_dir, s) for s in split["train"]]
        self.val_scenes = [cache.load(cache_dir, s) for s in split["val"]]

    def choose_labels(self):
        """The weak labels: the lead process takes them from the run (resuming), from --label-file, or chooses
        them by the protocol, and saves them as the run's label file; the others read that file."""
        cfg = self.config
        if self.lead:
            labels = {s.name: s.labels for s in self.train_scenes}
            if self.resume_state is not None:
                chosen, meta = weak_labels.load(cfg.label_file)
                weak_labels.check_against(cfg.label_file, chosen, labels)
            else:
                if self.preloaded is not None:
                    source, (chosen, meta) = self.preloaded
                    weak_labels.check_against(source, chosen, labels)
                else:
                    meta = cfg.labels
                    chosen = weak_labels.choose_all(labels, meta["protocol"], meta["value"], seed=meta["seed"])
                weak_labels.save(cfg.label_file, chosen, meta["protocol"], meta["value"], meta["seed"])
        if ddp.active():
            torch.distributed.barrier()
        if not self.lead:
            chosen, meta = weak_labels.load(cfg.label_file)
        self.chosen = chosen
        n_lab = sum(len(v) for v in chosen.values())
        n_pts = sum(len(s.labels) for s in self.train_scenes)
        self.say(f"{cfg.data_kind} data at {cfg.data_root}: {len(self.train_scenes)} train / {len(self.val_scenes)} "
                 f"val scenes; {n_lab} labeled points of {n_pts} ({100 * n_lab / max(n_pts, 1):.3g}%, "
                 f"{meta['protocol']}); model {cfg.model}, {cfg.voxel_size * 100:g} cm voxels, {cfg.epochs} epochs"
                 + (f", {self.world} processes" if self.world > 1 else "") + f"; run folder {self.out}", flush=True)

    def build(self):
        cfg = self.config
        self.train_set = VoxelScenes(self.train_scenes, self.chosen, voxel_size=cfg.voxel_size, train=True,
                                     seed=cfg.seed, with_xyz=cfg.with_xyz)
        self.steps_per_epoch = ddp.StepBatches(len(self.train_set), cfg.batch_size, cfg.seed, 0, self.rank,
                                               self.world).steps()
        total = max(1, cfg.epochs * self.steps_per_epoch)
        if not cfg.schedule:
            self.config = cfg = cfg.replace(schedule=((0, 1.0, total),))
        if cfg.proto_momentum is None:
            self.config = cfg = cfg.replace(proto_momentum=auto_proto_momentum(total))
            if cfg.loss == "erda":
                self.say(f"prototype EMA momentum {cfg.proto_momentum:.4g} (auto: a tenth of the run's {total} steps)",
                         flush=True)
        net = build_model(cfg)
        if self.world > 1:
            net = ddp.convert_sync_batchnorm(net, self.device.type)
        self.net = net.to(self.device)
        self.params = list(self.net.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                         nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda t: self.config.lr_factor(t))
        self.criterion = ErdaCriterion(cfg.loss, cfg.distance, cfg.entropy_weight, cfg.erda_weight, cfg.erda_points,
                                       cfg.detach_pseudo, all_reduce=ddp.all_reduce, world=self.world)
        self.state = TrainState(cfg, self.net, self.optimizer, self.scheduler)
        self.runlog = RunLogHook(self.out, self.lead)
        self.hooks = [self.runlog, ValidationHook(self.val_scenes, self.runlog),
                      CheckpointHook(self.out, self.lead, cfg.keep, cfg.ckpt_every)]

    def restore(self):
        if self.resume_state is None:
            return
        path, state = self.resume_state
        self.state.load_state_dict(state)
        if self.extend_to is not None:
            from ..config import extend_schedule

            self.config = extend_schedule(self.config, self.extend_to, self.state.step, self.steps_per_epoch)
            self.say(f"extending the run to {self.extend_to} epochs: the learning rate decays from "
                     f"{self.config.lr * self.config.lr_factor(self.state.step):.4g} to 0 at step "
                     f"{self.config.schedule[-1][2]}", flush=True)
        self.state.config = self.config
        self.say(f"resumed from {path} at epoch {self.state.epoch + 1}, batch {self.state.batch} (step "
                 f"{self.state.step})", flush=True)

    def write_config(self):
        if self.lead:
            self.config.save(os.path.join(self.out, "config.json"))

    def fit(self):
        """All phases; returns {"best_miou", "out"}."""
        self.prepare_data()
        self.choose_labels()
        self.build()
        self.restore()
        self.write_config()
        self.dnet = torch.nn.parallel.DistributedDataParallel(self.net) if self.world > 1 else self.net
        self.stop = StopRequest()
        self.dnet.train()
        try:
            while self.stop_reason is None and self.state.epoch < self.config.epochs:
                self.run_epoch()
            self.stop_reason = self.stop_reason or "end"
        finally:
            for hook in self.hooks:
                hook.finish(self)
        return self.finish()

    def run_epoch(self):
        from tqdm import tqdm

        cfg, st = self.config, self.state
        self.train_set.set_epoch(st.epoch)
        sampler = ddp.StepBatches(len(self.train_set), cfg.batch_size, cfg.seed, st.epoch, self.rank, self.world,
                                  start=st.batch)
        loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=cfg.workers)
        self.diag = EpochDiagnostics()
        loss_sum, n, voxels, waited = 0.0, 0, 0, 0.0
        self._bar = tqdm(total=len(sampler), desc=f"epoch {st.epoch + 1}/{cfg.epochs}", leave=False, file=sys.stdout,
                         disable=not (self.lead and sys.stdout.isatty()))
        t0 = time.perf_counter()
        batches = iter(loader)
        while True:
            tw = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - tw
            if batch is None:
                break
            self.run_step(batch)
            loss_sum, n, voxels = loss_sum + self.last["loss"], n + 1, voxels + len(batch["coords"])
            self._bar.update()
            for hook in self.hooks:
                hook.after_step(self)
            if self.stop_reason is not None:
                break
        self._bar.close()
        if self.stop_reason == "signal":
            return
        seconds = time.perf_counter() - t0
        st.epoch, st.batch = st.epoch + 1, 0
        self.last_epoch = self.stop_reason == "max_steps" or st.epoch == cfg.epochs
        self.epoch_summary = {"loss": loss_sum / max(n, 1), **self.diag.summary(self.net.head), "seconds": seconds,
                              "voxels_per_s": voxels * self.world / max(seconds, 1e-9),
                              "data_wait": waited / max(seconds, 1e-9)}
        for hook in self.hooks:
            hook.after_epoch(self)
        self.runlog.plot()

    def erda_weight_at(self, step):
        """--erda-weight, ramped up linearly over the first --erda-warmup epochs."""
        cfg = self.config
        ramp = cfg.erda_warmup * self.steps_per_epoch
        return cfg.erda_weight * min(1.0, (step + 1) / ramp) if ramp else cfg.erda_weight

    def run_step(self, batch):
        cfg, st = self.config, self.state
        labels = batch["labels"].to(self.device)
        out = self.dnet(sparse_input(batch, self.device))
        self.criterion.erda_weight = self.erda_weight_at(st.step)
        terms = self.criterion(out.pseudo_logits, out.logits, labels)
        loss = ddp.all_reduce(terms.total.detach().cpu()).item() / self.world
        if not math.isfinite(loss):
            raise TrainingError(
                f"step {st.step + 1} (epoch {st.epoch + 1}, batch {st.batch + 1}): the training loss is {loss}; the "
                f"run stopped before this step changed anything, and the newest good checkpoint is kept in "
                f"{self.out} (a lower --lr may help)")
        self.diag.watch(out.pseudo_logits, out.logits, terms)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.net.head is not None:
            self.net.head.update_prototypes(out.projected, labels, reduce_fn=ddp.all_reduce if self.world > 1 else None)
        self.diag.step(out.pseudo_logits, out.logits, terms, batch["full_labels"].to(self.device))
        st.step, st.batch = st.step + 1, st.batch + 1
        self.last = {"loss": loss, "ce": terms.ce, "erda": terms.erda}
        signum = self.stop.signum or 0
        if self.world > 1:
            signum = int(ddp.all_reduce(torch.tensor([float(signum)])).item())
        if signum:
            self.stop_reason, self.signum = "signal", self.stop.signum or signal.SIGTERM
        elif cfg.max_steps and st.step >= cfg.max_steps:
            self.stop_reason = "max_steps"

    def set_postfix(self, **values):
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def finish(self):
        if self.dump_rank_state:
            os.makedirs(self.dump_rank_state, exist_ok=True)
            head = self.net.head
            torch.save({"model": self.net.backbone.state_dict(),
                        "head": head.state_dict() if head is not None else None},
                       os.path.join(self.dump_rank_state, f"rank{self.rank}.pt"))
        if self.stop_reason == "signal":
            sys.exit(128 + int(self.signum))
        curves = self.runlog.curves
        best_path = os.path.join(self.out, "best.pt")
        self.say(f"done: best validation mIoU {100 * self.state.best:.2f}% ({best_path}); "
                 + (f"curves in {curves}" if curves else f"no curves.png: {self.runlog.log.plot_missing}"))
        return {"best_miou": self.state.best, "out": self.out}
