"""Evaluation at full resolution: voxel logits mapped back to every original point through the inverse
maps, a confusion matrix over the scenes, and the per-point predictions. Used by the trainer's validation
and by `python -m erda_sparse.evaluate`."""
import numpy as np
import torch

from .. import distributed as ddp
from ..data import IGNORE_LABEL, scannet
from ..data.loader import VoxelScenes, make_loader
from ..metrics import confusion


def sparse_input(batch, device):
    from ..minkowski import ME

    return ME.SparseTensor(batch["feats"].to(device), coordinates=batch["coords"].to(device), device=device)


@torch.no_grad()
def evaluate(model, scenes, voxel_size, device, with_xyz=False, num_classes=scannet.NUM_CLASSES, keep_pred=False):
    """Confusion matrix over every original point of the scenes, and the per-point predictions when
    keep_pred. Under torchrun each process takes every world-th scene and the matrices are summed."""
    was_training = model.training
    model.eval()
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if ddp.active() else (0, 1)
    ds = VoxelScenes(scenes[rank::world], None, voxel_size=voxel_size, train=False, with_xyz=with_xyz)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    preds = {}
    for batch in make_loader(ds, batch_size=1, shuffle=False):
        _, logits = model(sparse_input(batch, device))
        for b in range(len(batch["scenes"])):
            lo = logits.F[batch["offsets"][b]:batch["offsets"][b + 1]]
            pred = lo.argmax(1).cpu()[batch["inverse"][b]].numpy()
            cm += confusion(pred, batch["point_labels"][b].numpy(), num_classes, IGNORE_LABEL)
            if keep_pred:
                preds[batch["scenes"][b]] = pred
    model.train(was_training)
    return ddp.all_reduce(torch.from_numpy(cm)).numpy(), preds
