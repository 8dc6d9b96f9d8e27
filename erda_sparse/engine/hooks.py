"""What runs beside the training loop, as small objects the Trainer calls after a step and after an epoch
(in the order given): the run log, validation with the best checkpoint, periodic checkpoints. Only the
lead process writes."""
import math
import os

import torch

from ..checkpoint import prune, save, step_path
from ..data import scannet
from ..errors import TrainingError
from ..metrics import scores, table
from ..runlog import RunLog
from .evaluator import evaluate


class Hook:
    def after_step(self, trainer):
        pass

    def after_epoch(self, trainer):
        pass

    def finish(self, trainer):
        pass


class RunLogHook(Hook):
    """metrics.jsonl, TensorBoard and curves.png (runlog.RunLog), the progress bar's numbers and the epoch
    line: loss terms, unlabeled accuracy of p and q, learning rate, voxels/s and the share of the epoch spent
    waiting for data."""

    def __init__(self, out_dir, lead):
        self.log = RunLog(out_dir, enabled=lead)
        self.curves = None

    def after_step(self, trainer):
        r = trainer.last
        lr = trainer.scheduler.get_last_lr()[0]
        trainer.set_postfix(loss=f"{r['loss']:.3f}", ce=f"{r['ce']:.3f}", erda=f"{r['erda']:.3f}", lr=f"{lr:.4f}")
        self.log.record("train_step", trainer.state.step, loss=r["loss"], ce=_num(r["ce"]), erda=_num(r["erda"]),
                        lr=lr)

    def after_epoch(self, trainer):
        e = trainer.epoch_summary
        self.log.record("train_epoch", trainer.state.step, epoch=trainer.state.epoch, **e)
        pseudo = (f"; unlabeled accuracy p {100 * e['pseudo_acc']:.1f}% q {100 * e['seg_acc']:.1f}%, max p "
                  f"{e['max_p']:.2f}" if "pseudo_acc" in e else
                  f"; unlabeled accuracy q {100 * e['seg_acc']:.1f}%" if "seg_acc" in e else "")
        trainer.say(f"epoch {trainer.state.epoch}/{trainer.config.epochs}: loss {e['loss']:.4f} (ce "
                    f"{e.get('ce', math.nan):.4f}, erda {e.get('erda', math.nan):.4f}){pseudo}, lr "
                    f"{trainer.scheduler.get_last_lr()[0]:.4f}, {e['voxels_per_s']:.0f} voxels/s, data wait "
                    f"{100 * e['data_wait']:.0f}%", flush=True)

    def after_validation(self, trainer, sc):
        self.log.record("val", trainer.state.step, epoch=trainer.state.epoch, miou=sc["miou"], macc=sc["macc"],
                        oa=sc["oa"])

    def plot(self):
        self.curves = self.log.plot()

    def finish(self, trainer):
        self.log.close()


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


class ValidationHook(Hook):
    """Every `eval_every` epochs and at the end: the validation scenes at full resolution; a better mIoU
    makes the epoch's checkpoint the best one (RUN/best.pt)."""

    def __init__(self, scenes, runlog):
        self.scenes, self.runlog = scenes, runlog

    def after_epoch(self, trainer):
        cfg, st = trainer.config, trainer.state
        trainer.improved = None
        if st.epoch % cfg.eval_every and not trainer.last_epoch:
            return
        cm, _ = evaluate(trainer.net.backbone, self.scenes, cfg.voxel_size, trainer.device, cfg.with_xyz,
                         cfg.num_classes)
        sc = scores(cm)
        self.runlog.after_validation(trainer, sc)
        trainer.say(table(sc, scannet.CLASS_NAMES), flush=True)
        if sc["miou"] > st.best:
            st.best, trainer.improved = sc["miou"], sc


class CheckpointHook(Hook):
    """RUN/ckpt-<step>.pt at every epoch end, every `ckpt_every` steps and when a stop signal arrives; the
    newest `keep` are kept; RUN/best.pt when validation improved. A checkpoint is never written from
    non-finite parameters."""

    def __init__(self, out_dir, lead, keep, every=None):
        self.out_dir, self.lead, self.keep, self.every = out_dir, lead, keep, every
        self.best_path = os.path.join(out_dir, "best.pt")

    def save(self, trainer):
        if not self.lead:
            return None
        bad = [n for n, t in trainer.net.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise TrainingError(f"step {trainer.state.step}: non-finite values in {bad[0]}"
                                + (f" and {len(bad) - 1} more tensors" if len(bad) > 1 else "")
                                + f"; no checkpoint written, the newest good one is kept in {self.out_dir} "
                                "(a lower --lr may help)")
        state = trainer.state.state_dict()
        save(state, step_path(self.out_dir, trainer.state.step))
        prune(self.out_dir, self.keep)
        return state

    def after_step(self, trainer):
        st = trainer.state
        if trainer.stop_reason == "signal":
            self.save(trainer)
            trainer.say(f"stopping on signal {int(trainer.signum)}: checkpoint at step {st.step} saved", flush=True)
        elif (self.every and st.step % self.every == 0 and st.batch < trainer.steps_per_epoch
              and trainer.stop_reason is None):
            self.save(trainer)

    def after_epoch(self, trainer):
        state = self.save(trainer)
        if trainer.improved is not None and state is not None:
            save({**state, "scores": trainer.improved}, self.best_path)
