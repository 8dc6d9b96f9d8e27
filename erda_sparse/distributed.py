"""Data-parallel helpers for torchrun: process group set-up, all-reduce, batch norm synchronised across
processes (on CPU too, where torch's SyncBatchNorm, which MinkowskiEngine's conversion uses, refuses to
run), and the step-indexed batch sampler that makes
K processes with batch B see exactly what one process with batch K*B sees, and lets a run resume in the
middle of an epoch."""
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


def setup(device_type):
    """Joins the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA.
    Returns (rank, world size, local rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce(t):
    """Sum over processes (a copy; the input is left alone); the identity in a single process."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class AllReduceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the whole global batch: per-channel sums,
    sums of squares and counts are all-reduced (with gradient) across processes. In a single process it
    is plain BatchNorm1d."""

    def forward(self, x):
        if not (self.training and active()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce as all_reduce_with_grad

        c = x.shape[1]
        xd = x.double()  # sums in float64: E[x^2] - E[x]^2 cancels badly in float32
        local = torch.cat([xd.sum(0), (xd * xd).sum(0), xd.new_tensor([float(x.shape[0])])])
        total = all_reduce_with_grad(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        mean, var, n = mean.to(x.dtype), var.to(x.dtype), n.to(x.dtype)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


def convert_sync_batchnorm(module, device_type="cpu"):
    """Batch norm over the global batch. On CUDA: MinkowskiEngine's sync-BN conversion for its batch norms
    and torch's SyncBatchNorm for the others (both GPU-only). On CPU: every BatchNorm1d (MinkowskiEngine's
    batch norms wrap one) becomes AllReduceBatchNorm. Parameters and running statistics are kept."""
    if device_type == "cuda":
        from .minkowski import ME

        return nn.SyncBatchNorm.convert_sync_batchnorm(ME.MinkowskiSyncBatchNorm.convert_sync_batchnorm(module))
    return _convert_cpu(module)


def _convert_cpu(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, AllReduceBatchNorm):
            new = AllReduceBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _convert_cpu(child)
    return module


class StepBatches(torch.utils.data.Sampler):
    """Batches of one process for one epoch. The epoch's order is a permutation seeded by (seed, epoch),
    padded by wrapping around to a whole number of global batches of world * batch_size; global batch j
    is cut into world consecutive slices and this process takes slice `rank`. `start` skips the first
    batches (resuming inside an epoch)."""

    def __init__(self, n, batch_size, seed, epoch, rank=0, world=1, start=0):
        self.n, self.b, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.start = rank, world, start

    def steps(self):
        g = self.b * self.world
        return -(-self.n // g)

    def __len__(self):
        return max(0, self.steps() - self.start)

    def __iter__(self):
        g = self.b * self.world
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        perm = np.resize(perm, self.steps() * g)  # wrap around to whole global batches
        for j in range(self.start, self.steps()):
            lo = j * g + self.rank * self.b
            yield perm[lo:lo + self.b].tolist()
