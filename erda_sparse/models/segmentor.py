"""The network a run trains: the MinkUNet and, for the ERDA loss, the pseudo-label head, as one module
(one DistributedDataParallel), returning a named result; `build_model(config)` for the trainer and the
evaluator alike."""
from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from . import minkunet
from .pseudo_head import PseudoLabelHead


class SegOutput(NamedTuple):
    logits: torch.Tensor                   # z: (N, C) class logits of the voxels
    projected: Optional[torch.Tensor]      # g(f): (N, d) projected features (None without the pseudo head)
    pseudo_logits: Optional[torch.Tensor]  # s: (N, C) cosine logits against the prototypes (None without it)


class Segmentor(nn.Module):
    def __init__(self, backbone, head=None):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        feats, logits = self.backbone(x)
        if self.head is None:
            return SegOutput(logits.F, None, None)
        g, s = self.head(feats.F)
        return SegOutput(logits.F, g, s)


def build_model(config):
    """The Segmentor of a Config (or of its dict, as checkpoints hold it): the pseudo head only for the ERDA
    loss."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    in_ch = 6 if get("with_xyz", False) else 3
    backbone = minkunet.build(get("model"), in_ch, get("num_classes", 20))
    head = None
    if get("loss", "erda") == "erda":
        head = PseudoLabelHead(backbone.feature_dim, get("num_classes", 20), momentum=get("proto_momentum") or 0.999,
                               tau=get("pseudo_tau", 1.0), proto_init=get("proto_init", "first"),
                               proto_features=get("proto_features", "normalized"))
    return Segmentor(backbone, head)
