"""Augmentation and voxelization.

Every random choice draws from a numpy Generator passed in, so a sample is reproducible from
(seed, epoch, index) whatever the number of loader workers.
"""
import math
from dataclasses import dataclass

import numpy as np

from . import IGNORE_LABEL


@dataclass
class AugmentConfig:
    rotate_z: bool = True              # uniform angle about the vertical axis
    tilt: float = math.pi / 64         # max rotation about x and y (radians)
    scale: tuple = (0.9, 1.1)
    flip: bool = True                  # mirror x and y, each with probability 1/2
    translate: float = 0.2             # max shift (metres) per axis
    elastic: tuple = ((0.2, 0.4), (0.8, 1.6))  # (granularity, magnitude) pairs, metres
    auto_contrast_p: float = 0.2
    color_translate: float = 0.1       # max shift, fraction of the colour range
    color_jitter: float = 0.05         # std, fraction of the colour range
    dropout: float = 0.1               # fraction of unlabeled points dropped


def _rot(axis, a):
    c, s = math.cos(a), math.sin(a)
    if axis == 0:
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 1:
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def elastic_distortion(coords, granularity, magnitude, rng):
    """Smooth random displacement: Gaussian noise on a grid of cell `granularity`, smoothed by three
    passes of a 3-tap box filter per axis, interpolated trilinearly at every point, times `magnitude`."""
    lo = coords.min(0) - 3 * granularity
    dims = ((coords.max(0) - lo) // granularity).astype(int) + 4
    noise = rng.standard_normal((*dims, 3)).astype(np.float32)
    for _ in range(3):
        for ax in range(3):
            pad = [(0, 0)] * 4
            pad[ax] = (1, 1)
            p = np.pad(noise, pad, mode="edge")
            sl = lambda a, b: tuple(slice(a, p.shape[ax] - b) if i == ax else slice(None) for i in range(4))  # noqa: E731, B023
            noise = (p[sl(0, 2)] + p[sl(1, 1)] + p[sl(2, 0)]) / 3
    g = (coords - lo) / granularity
    i0 = np.clip(np.floor(g).astype(int), 0, dims - 2)
    t = np.clip(g - i0, 0, 1)
    out = np.zeros_like(coords)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = ((t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1])
                     * (t[:, 2] if dz else 1 - t[:, 2]))
                out += w[:, None] * noise[i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
    return coords + out * magnitude


def augment(coords, colors, keep, cfg, rng):
    """Training augmentation of one scene. coords (N, 3) float, colors (N, 3) float in [0, 255], keep (N,)
    bool: points that must survive dropout (the labeled ones). Returns (coords, colors, kept indices)."""
    coords = coords.astype(np.float64)
    colors = colors.astype(np.float32)
    idx = np.arange(len(coords))
    if cfg.dropout > 0:
        stay = keep | (rng.random(len(coords)) >= cfg.dropout)
        idx = idx[stay]
        coords, colors = coords[stay], colors[stay]
    center = coords.mean(0) if len(coords) else np.zeros(3)
    coords = coords - center
    if cfg.elastic:
        for gran, mag in cfg.elastic:
            coords = elastic_distortion(coords, gran, mag * rng.random(), rng)
    m = np.eye(3)
    if cfg.tilt:
        m = _rot(0, rng.uniform(-cfg.tilt, cfg.tilt)) @ _rot(1, rng.uniform(-cfg.tilt, cfg.tilt)) @ m
    if cfg.rotate_z:
        m = _rot(2, rng.uniform(0, 2 * math.pi)) @ m
    if cfg.scale:
        m = m * rng.uniform(*cfg.scale)
    if cfg.flip:
        m = np.diag([-1 if rng.random() < 0.5 else 1, -1 if rng.random() < 0.5 else 1, 1]) @ m
    coords = coords @ m.T
    if cfg.translate:
        coords = coords + rng.uniform(-cfg.translate, cfg.translate, 3)
    if len(colors) and rng.random() < cfg.auto_contrast_p:
        lo, hi = colors.min(0), colors.max(0)
        stretched = (colors - lo) * (255.0 / np.maximum(hi - lo, 1e-3))
        blend = rng.random()
        colors = (1 - blend) * colors + blend * stretched
    if cfg.color_translate:
        colors = colors + rng.uniform(-1, 1, 3) * 255 * cfg.color_translate
    if cfg.color_jitter:
        colors = colors + rng.standard_normal(colors.shape) * 255 * cfg.color_jitter
    return coords.astype(np.float32), np.clip(colors, 0, 255).astype(np.float32), idx


def voxelize(coords, voxel_size):
    """MinkowskiEngine's quantization: (voxel coords (M, 3) int32, index of one point per voxel (M,),
    voxel of every point (N,))."""
    from ..minkowski import ME

    vox, index, inverse = ME.utils.sparse_quantize(np.ascontiguousarray(coords, dtype=np.float32),
                                                   quantization_size=voxel_size, return_index=True,
                                                   return_inverse=True)
    return vox.numpy().astype(np.int32), index.numpy().astype(np.int64), inverse.numpy().astype(np.int64)


def voxel_labels(weak, inverse, num_voxels):
    """A voxel holding a chosen labeled point carries its label (the first such point in index order
    when several); every other voxel gets IGNORE_LABEL."""
    out = np.full(num_voxels, IGNORE_LABEL, dtype=np.int64)
    pts = np.flatnonzero(weak >= 0)[::-1]  # reversed: with repeated targets numpy keeps the last write
    out[inverse[pts]] = weak[pts]
    return out


def features(colors, coords=None, with_xyz=False):
    """Colour in [-0.5, 0.5] (and xyz, centred, in metres when with_xyz)."""
    f = colors.astype(np.float32) / 255.0 - 0.5
    if with_xyz:
        f = np.concatenate([f, (coords - coords.mean(0)).astype(np.float32)], axis=1)
    return f
