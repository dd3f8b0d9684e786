"""Data-side parts of OneN (paper section 4): the input settings of table 1, the synthetic
background class, weak (box) supervision, and the training augmentation.

Input settings and weak boxes are helpers on Samples / Splits (not model options), because they
change the class ids of the *test* set too (B merges the defect types): build the split with
`input_setting(split, "B")` and give the same split to `fit` and to the evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...data.samples import Sample, Split
from ...errors import DataError
from .background import synthesize_background

#: table 1: (defective images kept, good images kept, defect types merged, background class added)
INPUT_SETTINGS = {
    "STD": dict(good=False, merge=False, background=False),
    "STD+G": dict(good=True, merge=False, background=False),
    "STD+BG": dict(good=False, merge=False, background=True),
    "STD+G+BG": dict(good=True, merge=False, background=True),
    "B": dict(good=True, merge=True, background=False),
    "B+BG": dict(good=True, merge=True, background=True),
}


def _class_name(s: Sample, names: tuple[str, ...]) -> str:
    if names and 0 <= s.class_id < len(names):
        return names[s.class_id]
    return "good" if s.label == 0 else s.defect_type


def input_setting(split: Split, setting: str = "STD+G", *, seed: int = 0, n_background: int | None = None,
                  border: float = 0.15) -> Split:
    """Re-label a classification split (class 0 = normal, 1.. = defect types) for one input
    setting of table 1. Class ids are renumbered contiguously: normal first (when kept), then
    the defect types (or one "defective" class for B / B+BG), then "background" (when added).

    Background images (section 4) are synthesised from a seeded random subset of the *normal*
    images of the same side of the split (train from train, test from test), even in STD+BG
    where the normal class itself is not kept. Their label is 1 (a capture failure is an
    anomaly) and their mask is the inpainted centre. `n_background` images per side; default
    (left open by the paper): the mean size of the defect classes on that side.
    """
    if setting not in INPUT_SETTINGS:
        raise ValueError(f"unknown input setting {setting!r}; one of {', '.join(INPUT_SETTINGS)}")
    cfg = INPUT_SETTINGS[setting]
    names = tuple(split.class_names)
    defect_names = sorted({_class_name(s, names) for s in split.train + split.test if s.label != 0},
                          key=lambda n: (names.index(n) if n in names else len(names), n))
    if not defect_names:
        raise DataError(f"{split.name}: no defective samples, input setting {setting} needs labelled defects")
    new_names: list[str] = []
    if cfg["good"]:
        new_names.append(names[0] if names else "good")
    if cfg["merge"]:
        new_names.append("defective")
    else:
        new_names.extend(defect_names)
    if cfg["background"]:
        new_names.append("background")
    rng = np.random.default_rng(seed)

    def relabel(samples: list[Sample]) -> list[Sample]:
        out = []
        for s in samples:
            if s.label == 0:
                if cfg["good"]:
                    out.append(s.with_(class_id=0))
                continue
            cid = new_names.index("defective") if cfg["merge"] else new_names.index(_class_name(s, names))
            out.append(s.with_(class_id=cid))
        if cfg["background"]:
            normals = [s for s in samples if s.label == 0]
            counts = [sum(1 for s in samples if s.label != 0 and _class_name(s, names) == n) for n in defect_names]
            n = n_background if n_background is not None else int(round(np.mean([c for c in counts if c] or [0])))
            if normals and n > 0:
                pick = rng.choice(len(normals), size=min(n, len(normals)), replace=False)
                bg = new_names.index("background")
                for i in sorted(pick):
                    img, region = synthesize_background(normals[i].load_image(), border)
                    out.append(Sample(img, 1, region, "background", normals[i].category, bg, (),
                                      {"name": f"background<-{normals[i].name}"}))
        return out

    return Split(f"{split.name}[{setting}]", relabel(split.train), relabel(split.test), tuple(new_names))


def mask_to_boxes(mask: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """Bounding boxes (x1, y1, x2, y2, inclusive) of the 8-connected components of a mask."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return tuple((int(x), int(y), int(x + w - 1), int(y + h - 1)) for x, y, w, h, _ in stats[1:n])


def weak_boxes(samples: list[Sample]) -> list[Sample]:
    """Weak supervision (section 1, tables 5-14 "weakly-annotated mask"): replace the pixel mask
    of each defective sample by the boxes of its connected components (samples that already
    have boxes, e.g. DeepPCB, and normal samples are kept as they are)."""
    out = []
    for s in samples:
        if s.label != 0 and s.mask is not None and not s.boxes:
            out.append(s.with_(mask=None, boxes=mask_to_boxes(s.load_mask())))
        else:
            out.append(s)
    return out


def annotation(s: Sample, hw: tuple[int, int], supervision: str) -> np.ndarray | None:
    """The PMFL target of one sample at its own resolution (None = no target).
    supervision "masks": the pixel mask (or the boxes when only boxes exist); "boxes": boxes of
    the mask's components (or the given boxes); "none": no target for anyone."""
    if supervision == "none":
        return None
    if s.label == 0:
        return np.zeros(hw, dtype=bool)
    if s.mask is None and not s.boxes:
        return None
    m = s.load_mask(hw)
    if supervision == "boxes" and s.mask is not None:
        from ...data.samples import boxes_to_mask
        m = boxes_to_mask(mask_to_boxes(m), hw)
    return m


@dataclass
class TrainingArrays:
    images: np.ndarray      # n x S x S x 3 uint8
    masks: np.ndarray       # n x S x S uint8 {0, 1}
    has_target: np.ndarray  # n bool
    labels: np.ndarray      # n int64 class ids


def load_training_arrays(samples: list[Sample], size: int, supervision: str) -> TrainingArrays:
    """Decode every training image once, resized to size x size (the "resize" geometry the
    model predicts with), with its PMFL target (any annotated pixel marks the resized pixel)."""
    n = len(samples)
    images = np.zeros((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    has = np.zeros(n, bool)
    for i, s in enumerate(samples):
        im = s.load_image()
        images[i] = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if im.shape[0] > size else cv2.INTER_LINEAR)
        m = annotation(s, im.shape[:2], supervision)
        if m is not None:
            has[i] = True
            masks[i] = cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0
    labels = np.array([s.class_id for s in samples], np.int64)
    return TrainingArrays(images, masks, has, labels)


@dataclass(frozen=True)
class Augment:
    """Section 4, "Implementation Details": random crop that keeps the defect, Gaussian blur,
    horizontal flip, rotation up to 20 degrees, each with probability 0.5.

    Left open, decided here: crop side U(crop_min, 1) of the image side (enlarged to contain the
    defect's bounding box), resized back; blur sigma U(0.1, 2.0) (torchvision's default range);
    rotation fills the corners by reflection.
    """

    p: float = 0.5
    max_rotation: float = 20.0
    crop_min: float = 0.75
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __call__(self, img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        S = img.shape[0]
        if rng.random() < self.p:
            img, mask = self._crop(img, mask, rng)
        if rng.random() < self.p:
            sigma = rng.uniform(*self.blur_sigma)
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        if rng.random() < self.p:
            img, mask = img[:, ::-1], mask[:, ::-1]
        if rng.random() < self.p:
            angle = rng.uniform(-self.max_rotation, self.max_rotation)
            R = cv2.getRotationMatrix2D((S / 2 - 0.5, S / 2 - 0.5), angle, 1.0)
            img = cv2.warpAffine(np.ascontiguousarray(img), R, (S, S), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101)
            mask = cv2.warpAffine(np.ascontiguousarray(mask), R, (S, S), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_REFLECT_101)
        return np.ascontiguousarray(img), np.ascontiguousarray(mask)

    def _crop(self, img, mask, rng):
        S = img.shape[0]
        c = int(round(S * rng.uniform(self.crop_min, 1.0)))
        ys, xs = np.nonzero(mask)
        if len(ys):  # the crop must contain the defect's bounding box
            y1, y2, x1, x2 = ys.min(), ys.max(), xs.min(), xs.max()
            c = max(c, y2 - y1 + 1, x2 - x1 + 1)
            top = rng.integers(max(0, y2 - c + 1), min(y1, S - c) + 1)
            left = rng.integers(max(0, x2 - c + 1), min(x1, S - c) + 1)
        else:
            top, left = rng.integers(0, S - c + 1), rng.integers(0, S - c + 1)
        if c >= S:
            return img, mask
        img = cv2.resize(img[top : top + c, left : left + c], (S, S), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask[top : top + c, left : left + c], (S, S), interpolation=cv2.INTER_NEAREST)
        return img, mask
