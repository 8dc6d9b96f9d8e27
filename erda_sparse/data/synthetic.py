"""Procedural rooms written in ScanNet v2's raw layout, the default data when no ScanNet is found.

Each room is a floor, four walls with doors, windows, pictures and curtains, and furniture of the 20
benchmark classes (tables, chairs, sofas, beds, cabinets, bookshelves, desks, counters, refrigerators,
toilets, sinks, bathtubs, ...) built from boxes of plausible sizes and colours, placed without overlap
and turned about the vertical. Surfaces are meshed as jittered grids (both PLYs carry the faces), with
scanner noise on positions and colours, occlusion gaps cut out of the surfaces, and some unannotated
clutter (NYU40 id 0) and "otherprop" (id 40, outside the 20 classes). 20k-60k points a room,
deterministic per seed.

    python -m erda_sparse.data.synthetic --out DIR --rooms 12 --seed 0
"""
import argparse
import math
import os
import sys

import numpy as np

from .scannet import NYU40_IDS

C = {name: NYU40_IDS[i] for i, name in enumerate(
    ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
     "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
     "otherfurniture"))}
UNANNOTATED, OTHERPROP = 0, 40

BASE_COLORS = {
    "wall": (200, 196, 186), "floor": (140, 110, 80), "cabinet": (120, 80, 50), "bed": (210, 200, 220),
    "chair": (60, 60, 70), "sofa": (90, 110, 150), "table": (150, 110, 70), "door": (170, 130, 90),
    "window": (190, 220, 240), "bookshelf": (110, 75, 45), "picture": (200, 60, 60), "counter": (220, 220, 210),
    "desk": (160, 120, 80), "curtain": (180, 160, 120), "refrigerator": (235, 235, 235),
    "shower curtain": (200, 230, 230), "toilet": (245, 245, 245), "sink": (230, 230, 235), "bathtub": (240, 240, 240),
    "otherfurniture": (100, 120, 100), "clutter": (128, 128, 128),
}


def _box(x0, y0, z0, x1, y1, z1, skip_bottom=True):
    """Rectangles (origin, u, v) of a box's faces."""
    o = np.array([x0, y0, z0], float)
    dx, dy, dz = np.array([x1 - x0, 0, 0]), np.array([0, y1 - y0, 0]), np.array([0, 0, z1 - z0])
    faces = [(o + dz, dx, dy), (o, dx, dz), (o + dy, dx, dz), (o, dy, dz), (o + dx, dy, dz)]
    if not skip_bottom:
        faces.append((o, dx, dy))
    return faces


# Furniture as boxes in a local frame: (x0, y0, z0, x1, y1, z1), x along the width, y along the depth.
def _table(r, w=None, d=None, h=0.74):
    w, d = w or r.uniform(1.0, 1.8), d or r.uniform(0.7, 1.0)
    legs = [(x, y, 0, x + 0.05, y + 0.05, h - 0.04) for x in (0.03, w - 0.08) for y in (0.03, d - 0.08)]
    return [(0, 0, h - 0.04, w, d, h)] + legs


def _desk(r):
    w, d, h = r.uniform(1.1, 1.6), r.uniform(0.6, 0.8), 0.75
    return [(0, 0, h - 0.03, w, d, h), (0, 0, 0, 0.04, d, h - 0.03), (w - 0.04, 0, 0, w, d, h - 0.03)]


def _chair(r):
    s, h = r.uniform(0.42, 0.5), r.uniform(0.42, 0.48)
    legs = [(x, y, 0, x + 0.04, y + 0.04, h) for x in (0, s - 0.04) for y in (0, s - 0.04)]
    return [(0, 0, h, s, s, h + 0.05), (0, s - 0.05, h + 0.05, s, s, h + r.uniform(0.4, 0.5))] + legs


def _sofa(r):
    w, d = r.uniform(1.6, 2.3), r.uniform(0.8, 1.0)
    return [(0, 0, 0, w, d, 0.42), (0, d - 0.2, 0.42, w, d, 0.85), (0, 0, 0.42, 0.18, d - 0.2, 0.62),
            (w - 0.18, 0, 0.42, w, d - 0.2, 0.62)]


def _bed(r):
    w, d = r.uniform(1.0, 1.7), r.uniform(1.9, 2.1)
    return [(0, 0, 0, w, d, r.uniform(0.45, 0.6)), (0, d - 0.08, 0, w, d, 1.0)]


def _cabinet(r):
    return [(0, 0, 0, r.uniform(0.5, 1.0), r.uniform(0.4, 0.6), r.uniform(0.7, 1.1))]


def _bookshelf(r):
    w, d, h = r.uniform(0.7, 1.2), r.uniform(0.28, 0.38), r.uniform(1.6, 2.1)
    shelves = [(0.02, 0, z, w - 0.02, d, z + 0.02) for z in np.linspace(0.02, h - 0.05, 5)]
    return [(0, 0, 0, 0.02, d, h), (w - 0.02, 0, 0, w, d, h), (0, d - 0.02, 0, w, d, h)] + shelves


def _counter(r):
    return [(0, 0, 0, r.uniform(1.5, 2.6), r.uniform(0.55, 0.65), 0.9)]


def _refrigerator(r):
    return [(0, 0, 0, r.uniform(0.6, 0.8), r.uniform(0.6, 0.75), r.uniform(1.6, 1.9))]


def _toilet(r):
    return [(0, 0, 0, 0.4, 0.55, 0.4), (0, 0.55, 0, 0.4, 0.72, 0.75)]


def _sink(r):
    return [(0.2, 0.1, 0, 0.3, 0.2, 0.8), (0, 0, 0.8, 0.55, 0.45, 0.92)]


def _bathtub(r):
    w, d, h = r.uniform(1.5, 1.75), r.uniform(0.7, 0.8), r.uniform(0.5, 0.6)
    return [(0, 0, 0, w, 0.06, h), (0, d - 0.06, 0, w, d, h), (0, 0, 0, 0.06, d, h), (w - 0.06, 0, 0, w, d, h),
            (0.06, 0.06, 0, w - 0.06, d - 0.06, 0.08)]


def _other(r):
    return [(0, 0, 0, r.uniform(0.3, 1.2), r.uniform(0.3, 0.8), r.uniform(0.3, 1.2))]


def _clutter(r):
    return [(0, 0, 0, r.uniform(0.1, 0.35), r.uniform(0.1, 0.35), r.uniform(0.05, 0.3))]


FURNITURE = {"table": _table, "desk": _desk, "chair": _chair, "sofa": _sofa, "bed": _bed, "cabinet": _cabinet,
             "bookshelf": _bookshelf, "counter": _counter, "refrigerator": _refrigerator, "toilet": _toilet,
             "sink": _sink, "bathtub": _bathtub, "otherfurniture": _other}
ROOM_KINDS = {
    "bedroom": ["bed", "cabinet", "desk", "chair", "bookshelf", "otherfurniture"],
    "living": ["sofa", "table", "chair", "chair", "bookshelf", "cabinet", "otherfurniture"],
    "office": ["desk", "desk", "chair", "chair", "chair", "bookshelf", "cabinet", "table"],
    "kitchen": ["counter", "refrigerator", "sink", "table", "chair", "chair", "cabinet"],
    "bathroom": ["toilet", "sink", "bathtub", "cabinet"],
}


class _Room:
    def __init__(self, rng):
        self.rng = rng
        self.rects = []  # (origin, u, v, nyu40 id, colour, instance)
        self.instances = 0

    def add(self, rects, label, color_name, transform=None):
        base = np.array(BASE_COLORS[color_name], float)
        color = np.clip(base + self.rng.normal(0, 18, 3), 0, 255)
        for o, u, v in rects:
            if transform is not None:
                o, u, v = transform(o, True), transform(u, False), transform(v, False)
            self.rects.append((o, u, v, label, color, self.instances))
        self.instances += 1


def _place(rng, size, footprints, w, d, margin=0.05, against_wall=False, tries=60):
    """A free spot for a w x d footprint turned by a multiple of 90 degrees (and a small jitter);
    returns a transform of local points or None."""
    W, D = size
    for _ in range(tries):
        quarter = rng.integers(4)
        ang = quarter * math.pi / 2 + rng.normal(0, 0.05)
        ew, ed = (w, d) if quarter % 2 == 0 else (d, w)
        if against_wall:
            if W - ew < 0.2 or D - ed < 0.2:
                return None
            side, gap = rng.integers(4), margin + 0.01
            if side == 0:
                cx, cy = rng.uniform(ew / 2 + 0.1, W - ew / 2 - 0.1), ed / 2 + gap
            elif side == 1:
                cx, cy = rng.uniform(ew / 2 + 0.1, W - ew / 2 - 0.1), D - ed / 2 - gap
            elif side == 2:
                cx, cy = ew / 2 + gap, rng.uniform(ed / 2 + 0.1, D - ed / 2 - 0.1)
            else:
                cx, cy = W - ew / 2 - gap, rng.uniform(ed / 2 + 0.1, D - ed / 2 - 0.1)
        else:
            if W - ew < 0.2 or D - ed < 0.2:
                return None
            cx, cy = rng.uniform(ew / 2 + 0.1, W - ew / 2 - 0.1), rng.uniform(ed / 2 + 0.1, D - ed / 2 - 0.1)
        box = (cx - ew / 2 - margin, cy - ed / 2 - margin, cx + ew / 2 + margin, cy + ed / 2 + margin)
        if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > D:
            continue
        if any(not (box[2] <= f[0] or f[2] <= box[0] or box[3] <= f[1] or f[3] <= box[1]) for f in footprints):
            continue
        footprints.append(box)
        c, s = math.cos(ang), math.sin(ang)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        center_local = np.array([w / 2, d / 2, 0])

        def transform(p, is_point, rot=rot, cx=cx, cy=cy, center_local=center_local):
            if is_point:
                return rot @ (p - center_local) + np.array([cx, cy, 0])
            return rot @ p

        return transform
    return None


def _build(rng):
    room = _Room(rng)
    kind = rng.choice(sorted(ROOM_KINDS))
    W, D, H = rng.uniform(3.5, 7.0), rng.uniform(3.5, 6.5), rng.uniform(2.5, 3.0)
    if kind == "bathroom":
        W, D = rng.uniform(2.5, 3.8), rng.uniform(2.5, 3.5)
    room.add([(np.zeros(3), np.array([W, 0, 0]), np.array([0, D, 0]))], C["floor"], "floor")
    walls = [  # (origin, along, length) of the four walls, seen from inside
        (np.array([0, 0, 0]), np.array([1, 0, 0]), W), (np.array([W, 0, 0]), np.array([0, 1, 0]), D),
        (np.array([W, D, 0]), np.array([-1, 0, 0]), W), (np.array([0, D, 0]), np.array([0, -1, 0]), D)]
    for o, a, length in walls:
        room.add([(o, a * length, np.array([0, 0, H]))], C["wall"], "wall")
    inward = lambda a: np.array([-a[1], a[0], 0])  # noqa: E731
    # openings and things on the walls: a door, windows, pictures, curtains
    wall_items = ["door"] + ["window"] * int(rng.integers(1, 3)) + ["picture"] * int(rng.integers(0, 3))
    if kind == "bathroom":
        wall_items.append("shower curtain")
    for item in wall_items:
        o, a, length = walls[rng.integers(4)]
        n = inward(a)
        if item == "door":
            w, z0, h = 0.9, 0.0, 2.05
        elif item == "window":
            w, z0, h = rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.4)
        elif item == "picture":
            w, z0, h = rng.uniform(0.4, 0.9), rng.uniform(1.3, 1.6), rng.uniform(0.3, 0.6)
        else:
            w, z0, h = rng.uniform(1.2, 1.6), 0.2, 1.8
        if length < w + 0.4:
            continue
        t = rng.uniform(0.2, length - w - 0.2)
        p0 = o + a * t + n * (0.02 if item in ("door", "window") else 0.04) + np.array([0, 0, z0])
        room.add([(p0, a * w, np.array([0, 0, h]))], C[item], item)
        if item == "window" and rng.random() < 0.6:  # a curtain beside it
            room.add([(p0 + n * 0.1 - a * 0.3, a * 0.35, np.array([0, 0, min(h + 0.6, H - z0 - 0.05)]))],
                     C["curtain"], "curtain")
    footprints = []
    for name in ROOM_KINDS[kind] + list(rng.choice(sorted(FURNITURE), size=int(rng.integers(0, 3)))):
        boxes = FURNITURE[name](rng)
        arr = np.array(boxes)
        w, d = arr[:, 3].max(), arr[:, 4].max()
        tr = _place(rng, (W, D), footprints, w, d,
                    against_wall=name in ("bookshelf", "counter", "refrigerator", "toilet", "bathtub", "bed",
                                          "cabinet", "sink"))
        if tr is None:
            continue
        rects = [r for b in boxes for r in _box(*b)]
        room.add(rects, C[name], name, tr)
    for _ in range(int(rng.integers(3, 9))):  # small clutter: unannotated or "otherprop"
        boxes = _clutter(rng)
        tr = _place(rng, (W, D), footprints, boxes[0][3], boxes[0][4], margin=0.02)
        if tr is not None:
            room.add([r for b in boxes for r in _box(*b)], UNANNOTATED if rng.random() < 0.5 else OTHERPROP,
                     "clutter", tr)
    return room


def _mesh(room, rng, target_points):
    """Jittered grid vertices and triangles over every rectangle, at a spacing that lands near target_points."""
    areas = np.array([np.linalg.norm(u) * np.linalg.norm(v) for _, u, v, *_ in room.rects])
    spacing = math.sqrt(areas.sum() / target_points)
    verts, cols, labs, faces = [], [], [], []
    n0 = 0
    for o, u, v, label, color, _ in room.rects:
        nu = max(2, int(round(np.linalg.norm(u) / spacing)) + 1)
        nv = max(2, int(round(np.linalg.norm(v) / spacing)) + 1)
        a, b = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv), indexing="ij")
        p = o + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
        verts.append(p)
        shade = rng.normal(0, 6, (len(p), 1))
        cols.append(np.clip(color + shade + rng.normal(0, 4, (len(p), 3)), 0, 255))
        labs.append(np.full(len(p), label))
        ii, jj = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
        q = (ii * nv + jj).reshape(-1) + n0
        faces.append(np.stack([q, q + nv, q + nv + 1], 1))
        faces.append(np.stack([q, q + nv + 1, q + 1], 1))
        n0 += len(p)
    verts = np.concatenate(verts)
    verts = verts + rng.normal(0, 0.004, verts.shape)  # scanner noise
    cols, labs, faces = np.concatenate(cols), np.concatenate(labs), np.concatenate(faces)
    # occlusion gaps: holes the scanner never saw
    keep = np.ones(len(verts), bool)
    for _ in range(int(rng.integers(4, 12))):
        c = verts[rng.integers(len(verts))]
        keep &= np.linalg.norm(verts - c, axis=1) > rng.uniform(0.1, 0.35)
    remap = np.cumsum(keep) - 1
    faces = faces[keep[faces].all(1)]
    return verts[keep].astype(np.float32), cols[keep].astype(np.uint8), labs[keep].astype(np.uint16), remap[faces]


def make_room(seed):
    """(coords (N, 3) float32, colours (N, 3) uint8, NYU40 labels (N,) uint16, faces (F, 3)) of one room."""
    rng = np.random.default_rng([7, int(seed)])
    for _ in range(5):
        room = _build(rng)
        verts, cols, labs, faces = _mesh(room, rng, target_points=rng.uniform(28000, 50000))
        if 20000 <= len(verts) <= 60000:
            return verts, cols, labs, faces
    raise RuntimeError(f"synthetic room {seed}: could not reach 20k-60k points")  # pragma: no cover


def write_scene(root, scene, verts, cols, labs, faces):
    from plyfile import PlyData, PlyElement

    d = os.path.join(root, "scans", scene)
    os.makedirs(d, exist_ok=True)
    vdt = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    v = np.empty(len(verts), dtype=vdt)
    v["x"], v["y"], v["z"] = verts.T
    v["red"], v["green"], v["blue"] = cols.T
    v["alpha"] = 255
    f = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    f["vertex_indices"] = faces
    PlyData([PlyElement.describe(v, "vertex"), PlyElement.describe(f, "face")]).write(
        os.path.join(d, f"{scene}_vh_clean_2.ply"))
    lv = np.empty(len(verts), dtype=vdt + [("label", "u2")])
    for name in ("x", "y", "z", "red", "green", "blue", "alpha"):
        lv[name] = v[name]
    lv["label"] = labs
    PlyData([PlyElement.describe(lv, "vertex"), PlyElement.describe(f, "face")]).write(
        os.path.join(d, f"{scene}_vh_clean_2.labels.ply"))


def write_dataset(root, rooms=12, seed=0, val_fraction=0.25):
    """Writes `rooms` rooms and the split lists; returns {split: scene ids}."""
    names = [f"scene{9000 + i:04d}_00" for i in range(rooms)]
    for i, name in enumerate(names):
        write_scene(root, name, *make_room(seed * 100003 + i))
    n_val = max(1, int(round(rooms * val_fraction))) if rooms > 1 else 0
    splits = {"train": names[: rooms - n_val] or names, "val": names[rooms - n_val:] or names}
    for split, scenes in splits.items():
        with open(os.path.join(root, f"scannetv2_{split}.txt"), "w") as fh:
            fh.write("\n".join(scenes) + "\n")
    return splits


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rooms", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    splits = write_dataset(args.out, args.rooms, args.seed)
    print(f"wrote {args.rooms} synthetic rooms to {args.out} ({len(splits['train'])} train, {len(splits['val'])} val)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
