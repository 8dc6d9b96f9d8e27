"""What a run logs each epoch to explain how ERDA is learning (metrics.jsonl, TensorBoard, curves.png).

Over the unlabeled voxels of the training batches, against the full ground truth where the data has it
(never used for training):
  pseudo_acc     accuracy of argmax p (the pseudo-label head) on unlabeled voxels with a ground truth
  seg_acc        the same for argmax q (the segmentation network)
  max_p, entropy_p   the mean of max_k p_k and of H(p) over unlabeled voxels (how sharp p is; H <= log C)
  ce, erda       the epoch means of the two loss terms (per point, before the weights)
  grad_ce, grad_erda   the mean over steps of the norm of the loss gradient at the logits z, over the rows
                 of the labeled points and over the rows of the ERDA set (the two terms' pulls on the
                 network; with erda_points="all" the labeled rows carry both)
  grad_pseudo    the same at the pseudo logits s (what trains the projection head)
  proto_cos_mean, proto_cos_max   mean and largest cosine between two prototypes (how spread they are)
"""
import math
from collections import defaultdict

import torch
import torch.nn.functional as F

from ..data import IGNORE_LABEL


class EpochDiagnostics:
    def __init__(self):
        self.sums = defaultdict(float)
        self.counts = defaultdict(int)
        self._grads = {}

    def _add(self, key, value, count=1):
        if value is not None and math.isfinite(value):
            self.sums[key] += value
            self.counts[key] += count

    def watch(self, pseudo_logits, logits, terms):
        """Hooks that record this step's gradient norms when the loss is differentiated."""
        def norms(prefix, rows):
            def hook(g):
                for name, mask in rows:
                    if mask.any():
                        self._grads[f"{prefix}{name}"] = g[mask].float().norm().item()
            return hook

        if logits.requires_grad:
            logits.register_hook(norms("grad_", (("ce", terms.labeled), ("erda", terms.erda_set))))
        if pseudo_logits is not None and pseudo_logits.requires_grad:
            pseudo_logits.register_hook(norms("grad_", (("pseudo", terms.erda_set),)))

    @torch.no_grad()
    def step(self, pseudo_logits, logits, terms, full_labels):
        """Adds one step (call after backward, so that the gradient norms are in)."""
        for key, value in self._grads.items():
            self._add(key, value)
        self._grads = {}
        self._add("ce", terms.ce)
        self._add("erda", terms.erda)
        unl = ~terms.labeled
        known = unl & (full_labels != IGNORE_LABEL)
        truth = full_labels[known]
        n = int(known.sum())
        if n:
            self._add("seg_acc", (logits[known].argmax(1) == truth).sum().item() / n, 0)
            self.counts["seg_acc"] += 1
        if pseudo_logits is None or not unl.any():
            return
        if n:
            self._add("pseudo_acc", (pseudo_logits[known].argmax(1) == truth).sum().item() / n, 0)
            self.counts["pseudo_acc"] += 1
        logp = F.log_softmax(pseudo_logits[unl].float(), dim=1)
        p = logp.exp()
        self._add("max_p", p.max(1).values.mean().item())
        self._add("entropy_p", -(p * logp).sum(1).mean().item())

    def summary(self, head=None):
        """The epoch's means, and the prototypes' spread when a pseudo head is given."""
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}
        if head is not None and int(head.seen.sum()) > 1:
            protos = F.normalize(head.prototypes[head.seen].float(), dim=1)
            cos = protos @ protos.t()
            off = cos[~torch.eye(len(cos), dtype=torch.bool, device=cos.device)]
            out.update(proto_cos_mean=off.mean().item(), proto_cos_max=off.max().item())
        return out
