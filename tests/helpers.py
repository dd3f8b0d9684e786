"""Small synthetic data shared by tests: textured images with a planted bright square."""
from pathlib import Path

import numpy as np
from PIL import Image

from distillad.data import Sample


def texture(rng, size=64):
    base = rng.normal(120, 12, (size, size)).astype(np.float32)
    img = np.clip(np.stack([base, base * 0.9, base * 1.1], 2), 0, 255).astype(np.uint8)
    return img


def plant(img, y, x, s=14, value=250):
    out = img.copy()
    out[y : y + s, x : x + s] = value
    mask = np.zeros(img.shape[:2], bool)
    mask[y : y + s, x : x + s] = True
    return out, mask


def synthetic_split(n_train=8, n_good=3, n_bad=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    train = [Sample(texture(rng, size)) for _ in range(n_train)]
    test = [Sample(texture(rng, size)) for _ in range(n_good)]
    for i in range(n_bad):
        img, m = plant(texture(rng, size), 10 + 8 * i, 30 - 6 * i)
        test.append(Sample(img, 1, m, "square"))
    return train, test


def write_mvtec(root: Path, n_train=8, n_good=3, n_bad=3, size=64, seed=0) -> Path:
    """An MVTec-layout category folder with `<stem>_mask.png` masks."""
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/square", "ground_truth/square"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(texture(rng, size)).save(root / f"train/good/{i:03d}.png")
    for i in range(n_good):
        Image.fromarray(texture(rng, size)).save(root / f"test/good/{i:03d}.png")
    for i in range(n_bad):
        img, m = plant(texture(rng, size), 10 + 8 * i, 30 - 6 * i)
        Image.fromarray(img).save(root / f"test/square/{i:03d}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / f"ground_truth/square/{i:03d}_mask.png")
    return root
