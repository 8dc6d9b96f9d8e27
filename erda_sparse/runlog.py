"""What a run leaves for watching it: metrics.jsonl (one JSON object a line), TensorBoard scalars (when
tensorboard is installed), and a PNG of the loss and mIoU curves (when matplotlib is installed)."""
import json
import math
import os


class RunLog:
    def __init__(self, out_dir, enabled=True):
        self.out_dir = out_dir
        self.enabled = enabled
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.plot_missing = "not drawn yet"  # why curves.png is not there, when it is not
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
            except Exception:  # tensorboard not installed: the JSON lines and the PNG still record the run
                self.writer = None

    def record(self, kind, step, **values):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)
            self.writer.flush()

    def records(self):
        if not os.path.isfile(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def plot(self):
        """curves.png: training loss per epoch and validation mIoU."""
        if not self.enabled:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except Exception as exc:
            self.plot_missing = f"matplotlib cannot be imported ({exc}); `pip install matplotlib` draws it"
            return None
        rec = self.records()
        tr = [r for r in rec if r["kind"] == "train_epoch"]
        va = [r for r in rec if r["kind"] == "val"]
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        ep = [r["epoch"] for r in tr]

        def lines(ax, keys, scale=1.0):
            for key, label in keys:
                pts = [(r["epoch"], scale * r[key]) for r in tr if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), label=label)
            if ax.lines:
                ax.legend(fontsize=8)

        if tr:
            axes[0, 0].plot(ep, [r["loss"] for r in tr], label="total")
        lines(axes[0, 0], (("ce", "CE (labeled)"), ("erda", "ERDA (unlabeled)")))
        axes[0, 0].set_title("training loss terms")
        if va:
            axes[0, 1].plot([r["epoch"] for r in va], [100 * r["miou"] for r in va], marker="o")
        axes[0, 1].set_title("validation mIoU (%)")
        lines(axes[1, 0], (("pseudo_acc", "argmax p (pseudo head)"), ("seg_acc", "argmax q (network)"),
                           ("max_p", "mean max p")), scale=100)
        axes[1, 0].set_title("unlabeled training voxels (%)")
        lines(axes[1, 1], (("grad_ce", "|dL/dz| labeled rows"), ("grad_erda", "|dL/dz| ERDA rows"),
                           ("grad_pseudo", "|dL/ds| ERDA rows")))
        axes[1, 1].set_title("gradient norms at the logits")
        for ax in axes[1]:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        path = os.path.join(self.out_dir, "curves.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self):
        if self.writer is not None:
            self.writer.close()
