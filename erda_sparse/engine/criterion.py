"""ErdaCriterion: the loss of one training step in one fused-op call, and its terms for the record.

With labeled points L and the ERDA set U (the unlabeled points, or every point with erda_points="all"),
counted over the global batch (all processes), the loss is

    mean over L of -log q[y]  +  w * mean over U of (lambda H(p) + D(p, q))

computed by `erda_sparse.ops.erda_loss(..., reduction="none")`: its per-point values, summed, are the loss
(the op's own gradients are handed on as they are), and split by set they give the two terms without a
second call. `loss="ce"` computes the cross-entropy of the labeled points only, with no ERDA pass.
Under torchrun each process returns its share, multiplied by the world size, so that DDP's averaging of
gradients gives the gradient of the global-batch loss.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import ops
from ..data import IGNORE_LABEL


@dataclass
class LossTerms:
    total: torch.Tensor   # this process's share of the loss, to differentiate
    ce: float             # mean cross-entropy over this process's labeled points (nan when it has none)
    erda: float           # mean ERDA term over this process's ERDA set (nan for loss="ce" or when empty)
    labeled: torch.Tensor  # (N,) bool: the labeled points
    erda_set: torch.Tensor  # (N,) bool: the points the ERDA term covers (none for loss="ce")


class ErdaCriterion:
    def __init__(self, loss="erda", distance="kl", entropy_weight=1.0, erda_weight=0.1, erda_points="unlabeled",
                 detach_pseudo=False, all_reduce=None, world=1):
        if loss not in ("erda", "ce"):
            raise ValueError(f"loss must be 'erda' or 'ce', got {loss!r}")
        self.loss, self.distance, self.entropy_weight = loss, distance, float(entropy_weight)
        self.erda_weight, self.erda_points, self.detach_pseudo = float(erda_weight), erda_points, detach_pseudo
        self.all_reduce = all_reduce or (lambda t: t)
        self.world = world

    def __call__(self, pseudo_logits, logits, labels):
        labeled = labels != IGNORE_LABEL
        n_lab_local = labeled.sum()
        if self.loss == "ce":
            erda_set = torch.zeros_like(labeled)
            n_set_local = torch.zeros_like(n_lab_local)
        else:
            erda_set = ~labeled if self.erda_points == "unlabeled" else torch.ones_like(labeled)
            n_set_local = erda_set.sum()
        counts = self.all_reduce(torch.stack([n_lab_local, n_set_local]).double().cpu())
        ce_w = self.world / max(counts[0].item(), 1.0)
        n_lab, n_set = int(n_lab_local), int(n_set_local)
        if self.loss == "ce":
            c = F.cross_entropy(logits[labeled].float(), labels[labeled], reduction="sum")
            ce = c.item() / n_lab if n_lab else float("nan")
            return LossTerms(ce_w * c, ce, float("nan"), labeled, erda_set)
        erda_w = self.erda_weight * self.world / max(counts[1].item(), 1.0)
        values = ops.erda_loss(pseudo_logits, logits, labels, distance=self.distance,
                               entropy_weight=self.entropy_weight, erda_weight=erda_w, ce_weight=ce_w,
                               ignore_index=IGNORE_LABEL, erda_points=self.erda_points,
                               detach_pseudo=self.detach_pseudo, reduction="none")
        total = values.sum()
        with torch.no_grad():
            v = values.detach().double()
            ce_sum = v[labeled].sum()
            if self.erda_points == "all":  # labeled points carry both terms: take their (few) CE values out
                ce_sum = F.cross_entropy(logits.detach()[labeled].double(), labels[labeled], reduction="sum") * ce_w
            erda_sum = v.sum() - ce_sum
            ce = (ce_sum / ce_w).item() / n_lab if n_lab else float("nan")
            erda = (erda_sum / erda_w).item() / n_set if n_set and erda_w > 0 else float("nan")
        return LossTerms(total, ce, erda, labeled, erda_set)
