"""Cut every image of a split into a grid of tiles, each tile an individual sample.

OneN section 4 ("PCB" dataset): "we divide each 600 x 600 augmented image into nine
non-overlapping patches, each treated as an individual sample ... we further sub-sample both the
training and testing sets by randomly retaining only one-tenth of the patches". Small defects
become larger relative to the input, which matters once an image is resized to 224 px (or less).
`tile_split(split, grid=3, keep=0.1)` does that for any split; on the command line it is the
`tiles=3&tile_keep=0.1` option of every dataset spec (`data.open`).

What the paper leaves open, decided here:
- Tile edges are `round(i * size / grid)`, so tiles cover the image exactly (sizes differ by at
  most one pixel when the size is not a multiple of `grid`).
- A tile is defective when its window holds an annotated pixel (mask) or part of a box (boxes
  are clipped to the window and shifted into its coordinates); every other tile, including the
  defect-free tiles of a defective image, is normal (label 0, class 0, "good").
- A defective image with neither mask nor boxes cannot be tiled (which tiles hold the defect is
  unknown): an error naming the file.
- `keep` draws a seeded random fraction of the tiles on each side of the split (not stratified,
  as the paper describes it); at least one tile per side is kept.
"""
from __future__ import annotations

import random

from ..errors import DataError
from .samples import Sample, Split


def tile_edges(size: int, grid: int) -> list[int]:
    """grid + 1 edges from 0 to size (end exclusive)."""
    return [round(i * size / grid) for i in range(grid + 1)]


def _clip_box(box, x0: int, y0: int, x1: int, y1: int):
    """An inclusive (x1, y1, x2, y2) box clipped to the window [x0, x1) x [y0, y1), in window
    coordinates; None when it misses the window."""
    bx1, bx2 = sorted((box[0], box[2]))
    by1, by2 = sorted((box[1], box[3]))
    if bx2 < x0 or by2 < y0 or bx1 > x1 - 1 or by1 > y1 - 1:
        return None
    return (max(bx1, x0) - x0, max(by1, y0) - y0, min(bx2, x1 - 1) - x0, min(by2, y1 - 1) - y0)


def tile_sample(sample: Sample, grid: int) -> list[Sample]:
    """The grid x grid tiles of one sample, row by row (see the module docstring)."""
    if grid < 1:
        raise ValueError(f"tiles: grid must be >= 1, got {grid}")
    if sample.crop is not None:
        raise DataError(f"{sample.name}: already a tile; tile the whole images once")
    h, w = sample.image_size()
    if h < grid or w < grid:
        raise DataError(f"{sample.name}: image {w}x{h} is smaller than a {grid}x{grid} grid of tiles")
    mask = None
    if sample.label != 0 and not sample.boxes:
        if sample.mask is None:
            raise DataError(f"{sample.name}: defective image without mask or boxes cannot be tiled "
                            "(which tiles hold the defect is unknown)")
        mask = sample.load_mask((h, w))
    xs, ys = tile_edges(w, grid), tile_edges(h, grid)
    per_box = {k: v for k, v in sample.meta.items()
               if isinstance(v, tuple) and len(v) == len(sample.boxes) and sample.boxes}
    out = []
    for r in range(grid):
        for c in range(grid):
            x0, x1, y0, y1 = xs[c], xs[c + 1], ys[r], ys[r + 1]
            meta = {**sample.meta, "tile": (r, c), "source": sample.name}
            boxes: tuple = ()
            if sample.boxes:
                clipped = [(i, _clip_box(b, x0, y0, x1, y1)) for i, b in enumerate(sample.boxes)]
                kept = [i for i, b in clipped if b is not None]
                boxes = tuple(b for _, b in clipped if b is not None)
                meta.update({k: tuple(v[i] for i in kept) for k, v in per_box.items()})
            if sample.label == 0:
                defective = False
            elif sample.boxes:
                defective = bool(boxes)
            else:
                defective = bool(mask[y0:y1, x0:x1].any())
            crop = (x0, y0, x1, y1)
            if defective:
                out.append(sample.with_(crop=crop, boxes=boxes, meta=meta))
            else:
                out.append(sample.with_(crop=crop, label=0, class_id=0, defect_type="good", mask=None,
                                        boxes=(), meta=meta))
    return out


def tile_split(split: Split, grid: int = 3, keep: float = 1.0, seed: int = 0) -> Split:
    """Every image of both sides cut into grid x grid tiles; `keep` < 1 keeps a seeded random
    fraction of the tiles of each side (the paper keeps one tenth)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"tile_keep must lie in (0, 1], got {keep}")

    def side(samples, salt):
        tiles = [t for s in samples for t in tile_sample(s, grid)]
        if keep < 1.0 and tiles:
            rng = random.Random(f"{seed}/{salt}")
            idx = sorted(rng.sample(range(len(tiles)), max(1, round(keep * len(tiles)))))
            tiles = [tiles[i] for i in idx]
        return tiles

    return Split(f"{split.name}_tiles{grid}", side(split.train, "train"), side(split.test, "test"),
                 split.class_names)
