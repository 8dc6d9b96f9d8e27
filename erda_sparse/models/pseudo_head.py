"""The ERDA pseudo-label head: a projection of the decoder features, class prototypes kept as an
exponential moving average of the projected features of labeled points, and pseudo logits
s_k = cos(g(f), c_k) / tau. Used in training only."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PseudoLabelHead(nn.Module):
    def __init__(self, dim, num_classes, momentum=0.999, tau=1.0):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.momentum, self.tau = momentum, tau
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def forward(self, feats):
        """feats (N, d) -> (projected features g(f) (N, d), pseudo logits (N, C))."""
        g = self.proj(feats)
        s = F.normalize(g, dim=1) @ F.normalize(self.prototypes, dim=1).t() / self.tau
        return g, s

    @torch.no_grad()
    def update_prototypes(self, g, labels, ignore_index=-1, reduce_fn=None):
        """EMA of the mean normalised projected feature of each class's labeled points in the batch;
        classes absent from the batch stay unchanged; a class seen for the first time takes its mean.
        reduce_fn (e.g. an all-reduce of sums) makes every process hold the same prototypes."""
        C, d = self.prototypes.shape
        valid = labels != ignore_index
        gn = F.normalize(g.detach()[valid].float(), dim=1)
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
