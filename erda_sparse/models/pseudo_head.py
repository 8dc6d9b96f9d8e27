"""The ERDA pseudo-label head: a projection of the decoder features, class prototypes kept as an
exponential moving average of the projected features of labeled points, and pseudo logits
s_k = cos(g(f), c_k) / tau. Used in training only.

Options (each measured in benchmarks/label_efficiency.py; the README has the numbers):
  tau             temperature of the cosine logits; with tau = 1 (the official ERDA code) p = softmax(cos) is
                  never sharper than e / (e + (C - 1) / e), 0.28 for 20 classes
  proto_init      "first": zeros until a class is first seen, then that batch's mean; "random": Xavier-uniform
                  values, updated by the EMA from the first batch on (the official code)
  proto_features  "normalized": the EMA averages unit-length projected features; "raw": the projected
                  features as they are (the official code)
  momentum        of the EMA
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

PROTO_INITS = ("first", "random")
PROTO_FEATURES = ("normalized", "raw")


class PseudoLabelHead(nn.Module):
    def __init__(self, dim, num_classes, momentum=0.999, tau=1.0, proto_init="first", proto_features="normalized"):
        super().__init__()
        if proto_init not in PROTO_INITS or proto_features not in PROTO_FEATURES:
            raise ValueError(f"proto_init in {PROTO_INITS}, proto_features in {PROTO_FEATURES}")
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.momentum, self.tau = momentum, tau
        self.proto_init, self.proto_features = proto_init, proto_features
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))
        if proto_init == "random":
            nn.init.xavier_uniform_(self.prototypes)
            self.seen.fill_(True)

    def forward(self, feats):
        """feats (N, d) -> (projected features g(f) (N, d), pseudo logits (N, C))."""
        g = self.proj(feats)
        s = F.normalize(g, dim=1) @ F.normalize(self.prototypes, dim=1).t() / self.tau
        return g, s

    @torch.no_grad()
    def update_prototypes(self, g, labels, ignore_index=-1, reduce_fn=None):
        """EMA of the mean projected feature (unit-length or raw) of each class's labeled points in the batch;
        classes absent from the batch stay unchanged; with proto_init="first" a class seen for the first time
        takes its mean. reduce_fn (e.g. an all-reduce of sums) makes every process hold the same prototypes."""
        C, d = self.prototypes.shape
        valid = labels != ignore_index
        gv = g.detach()[valid].float()
        gn = F.normalize(gv, dim=1) if self.proto_features == "normalized" else gv
        y = labels[valid]
        sums = torch.zeros(C, d, device=g.device).index_add_(0, y, gn)
        counts = torch.bincount(y, minlength=C).to(sums.dtype)
        if reduce_fn is not None:
            sums, counts = reduce_fn(sums), reduce_fn(counts)
        present = counts > 0
        mean = sums[present] / counts[present, None]
        old = self.prototypes[present]
        first = ~self.seen[present]
        new = torch.where(first[:, None], mean, self.momentum * old + (1 - self.momentum) * mean)
        self.prototypes[present] = new
        self.seen |= present
