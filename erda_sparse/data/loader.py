"""The torch Dataset and collate function that turn cached scenes into MinkowskiEngine-ready batches."""
import numpy as np
import torch

from . import IGNORE_LABEL, weak_labels
from .transforms import AugmentConfig, augment, features, voxel_labels, voxelize


class VoxelScenes(torch.utils.data.Dataset):
    """Scenes (scannet.Scene: coords, colors, labels) -> voxelized samples.

    weak: {scene: chosen indices} (None: every annotated point is labeled). train=True augments (seeded by
    (seed, epoch, index): call set_epoch each epoch); validation does not. Each sample holds:
      coords (M, 3) int32 voxel coordinates, feats (M, F) float32, labels (M,) int64 weak voxel labels,
      full_labels (M,) int64 every voxel's ground truth (for diagnostics only, never for training),
      weak_mask (M,) bool, inverse (N',) int64 voxel of every kept original point, point_labels (N',)
      int16 the full labels of those points, point_index (N',) which original points were kept, scene.
    """

    def __init__(self, scenes, weak=None, voxel_size=0.02, train=False, seed=0, with_xyz=False, augment_cfg=None):
        self.scenes = list(scenes)
        self.weak = weak
        self.voxel_size = voxel_size
        self.train = train
        self.seed = seed
        self.with_xyz = with_xyz
        self.cfg = augment_cfg or AugmentConfig()
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.scenes)

    def weak_of(self, i):
        s = self.scenes[i]
        if self.weak is None:
            return s.labels.astype(np.int16)
        return weak_labels.apply(s.labels, self.weak[s.name])

    def __getitem__(self, i):
        s = self.scenes[i]
        weak = self.weak_of(i)
        coords, colors = s.coords, s.colors.astype(np.float32)
        kept = np.arange(len(coords))
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            coords, colors, kept = augment(coords, colors, weak >= 0, self.cfg, rng)
            weak = weak[kept]
        vox, index, inverse = voxelize(coords, self.voxel_size)
        labels = voxel_labels(weak, inverse, len(vox))
        full = s.labels[kept]
        return {
            "coords": vox,
            "feats": features(colors[index], coords[index], self.with_xyz),
            "labels": labels,
            "full_labels": voxel_labels(full, inverse, len(vox)),
            "weak_mask": labels != IGNORE_LABEL,
            "inverse": inverse,
            "point_labels": full,
            "point_index": kept,
            "scene": s.name,
        }


def collate(samples):
    """A list of samples -> one batch: coords (sum M, 4) int32 with the batch index first (ME's layout),
    feats, labels, weak_mask concatenated; per-sample inverse maps, point labels and voxel offsets."""
    from ..minkowski import ME

    coords = ME.utils.batched_coordinates([torch.from_numpy(s["coords"]) for s in samples])
    counts = [len(s["coords"]) for s in samples]
    return {
        "coords": coords,
        "feats": torch.from_numpy(np.concatenate([s["feats"] for s in samples])),
        "labels": torch.from_numpy(np.concatenate([s["labels"] for s in samples])),
        "full_labels": torch.from_numpy(np.concatenate([s["full_labels"] for s in samples])),
        "weak_mask": torch.from_numpy(np.concatenate([s["weak_mask"] for s in samples])),
        "offsets": torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.int64),
        "inverse": [torch.from_numpy(s["inverse"]) for s in samples],
        "point_labels": [torch.from_numpy(s["point_labels"].astype(np.int64)) for s in samples],
        "point_index": [torch.from_numpy(s["point_index"]) for s in samples],
        "scenes": [s["scene"] for s in samples],
    }


def make_loader(dataset, batch_size, shuffle, workers=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                                       collate_fn=collate, generator=g, persistent_workers=workers > 0,
                                       drop_last=False)
