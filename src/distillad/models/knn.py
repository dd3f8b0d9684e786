"""`knn`: the nearest-neighbour reference detector (in the manner of PatchCore, Roth et al. 2022).

It is not a distillation method: it is the baseline every distillation model must beat in the
same run, and it exercises the Detector contract on the teachers.

- Features: two teacher layers (default: stages 3 and 4 of the CNN, strides 8 and 16, like
  PatchCore's layer2 + layer3), each averaged over a 3x3 neighbourhood (local context), the
  deeper one bilinearly upsampled to the shallower grid, concatenated along channels. For a ViT
  teacher the two layers' patch tokens are on one grid already.
- Memory bank, bounded: a random pool of at most `max_pool` training patches, reduced by greedy
  k-center selection (PatchCore's coreset) to `coreset_ratio` of all training patches, at most
  `max_bank`. Greedy selection costs O(pool x bank): the random pool (32768) and the bank cap
  (8192) keep it bounded, what we chose instead of PatchCore's full-set greedy, which does not
  scale to 700 images on 2 cores (`benchmarks/bench_knn.py` measures it). The greedy distances
  run on a Gaussian random projection to 64 dimensions (PatchCore projects to 128; 64 halves
  the memory traffic of each greedy step, and the projection only steers the selection: the
  bank keeps the full features).
- Scores: per patch, the L2 distance to its nearest bank entry; the map is upsampled to the
  input size, smoothed with a Gaussian (sigma 4 px, PatchCore's value), restored to the
  original geometry; the image score is the maximum of the patch distances (PatchCore without
  its re-weighting step, which we leave out for simplicity).
- Threshold calibration: scores of up to 16 training images computed against the bank with
  their own patches excluded (a training image always matches itself otherwise).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.samples import Sample
from ..data.transforms import Preprocess
from ..training import seed_everything
from .base import Detector, Prediction, register_model
from .common import gaussian_blur_maps


def _embed(teacher, x: torch.Tensor, layers) -> torch.Tensor:
    """B x 3 x S x S -> B x C x h x w locally aggregated patch features."""
    feats = teacher(x, list(layers))
    maps = [F.avg_pool2d(feats.maps[j], 3, stride=1, padding=1) if teacher.kind != "vit" else feats.maps[j]
            for j in layers]
    h, w = maps[0].shape[-2:]
    maps = [m if m.shape[-2:] == (h, w) else F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
            for m in maps]
    return torch.cat(maps, dim=1)


def _nn_dist(q: torch.Tensor, bank: torch.Tensor, chunk: int = 4096, exclude=None) -> torch.Tensor:
    """Distance of each row of q (N x C) to its nearest row of bank (M x C). `exclude` (M bool)
    removes bank rows from the search."""
    bank_sq = (bank * bank).sum(1)
    if exclude is not None:
        bank_sq = bank_sq.masked_fill(exclude, float("inf"))
    out = []
    for i in range(0, len(q), chunk):
        qi = q[i : i + chunk]
        d2 = (qi * qi).sum(1, keepdim=True) - 2 * qi @ bank.T + bank_sq[None]
        out.append(d2.min(1).values.clamp_min(0).sqrt())
    return torch.cat(out)


def greedy_coreset(x: torch.Tensor, k: int, proj_dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Indices of k rows of x chosen by greedy k-center (farthest-point) selection on a random
    projection. O(len(x) * k) time, O(len(x)) extra memory."""
    n = len(x)
    if k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    if x.shape[1] > proj_dim:
        proj = torch.randn(x.shape[1], proj_dim, generator=g) / proj_dim**0.5
        z = x @ proj
    else:
        z = x
    z_sq = (z * z).sum(1)
    idx = torch.empty(k, dtype=torch.long)
    cur = int(torch.randint(n, (1,), generator=g))
    mind = torch.full((n,), float("inf"))
    for i in range(k):
        idx[i] = cur
        c = z[cur]
        d = z_sq - 2 * (z @ c) + c @ c
        mind = torch.minimum(mind, d)
        cur = int(torch.argmax(mind))
    return idx


@register_model
class KNN(Detector):
    """Nearest-neighbour patch distance reference detector. See the module docstring."""

    name = "knn"
    version = 1

    def __init__(self, teacher="tf_efficientnet_lite0", layers=(3, 4), image_size=256,
                 preprocess_mode="resize", coreset_ratio=0.1, max_pool=32768, max_bank=8192,
                 smoothing_sigma=4.0, batch_size=8, seed=0):
        self.teacher = teacher
        self.layers = layers
        self.image_size = image_size
        self.preprocess_mode = preprocess_mode
        self.coreset_ratio = coreset_ratio
        self.max_pool = max_pool
        self.max_bank = max_bank
        self.smoothing_sigma = smoothing_sigma
        self.batch_size = batch_size
        self.seed = seed

    def _preprocess(self) -> Preprocess:
        return Preprocess(int(self.image_size), mode=self.preprocess_mode)

    def _check_params(self, teacher):
        if len(self.layers) < 1:
            raise ValueError("knn: at least one layer is needed")
        teacher.check_layers(self.layers)
        if self.image_size % teacher.input_multiple:
            raise ValueError(f"knn: image_size {self.image_size} is not a multiple of {teacher.input_multiple} "
                             f"(teacher {teacher.name})")
        if not 0 < self.coreset_ratio <= 1:
            raise ValueError("knn: coreset_ratio must be in (0, 1]")

    def _fit(self, train, *, checkpoint_dir, resume, progress):
        from tqdm.auto import tqdm

        seed_everything(self.seed)
        self.teacher_ = self._make_teacher()
        self._check_params(self.teacher_)
        pre = self._preprocess()
        normal = [s for s in train if s.label == 0]
        if not normal:
            raise ValueError("knn.fit: no normal training image (label 0)")
        g = torch.Generator().manual_seed(self.seed)
        # per-image quota keeps the random pool bounded while images stream through
        pool, owner, n_total = [], [], 0
        quota = None
        for i in tqdm(range(0, len(normal), self.batch_size), desc="knn features", disable=not progress):
            batch = normal[i : i + self.batch_size]
            x, _ = pre.batch([s.load_image() for s in batch])
            emb = _embed(self.teacher_, x, self.layers)
            b, c, h, w = emb.shape
            if quota is None:
                quota = max(1, min(h * w, self.max_pool // len(normal)))
            for k in range(b):
                patches = emb[k].reshape(c, -1).T
                n_total += len(patches)
                sel = torch.randperm(len(patches), generator=g)[:quota]
                pool.append(patches[sel])
                owner.append(torch.full((len(sel),), i + k, dtype=torch.long))
        pool = torch.cat(pool)
        owner = torch.cat(owner)
        k = int(min(self.max_bank, max(1, round(self.coreset_ratio * n_total)), len(pool)))
        idx = greedy_coreset(pool, k, seed=self.seed)
        self.bank_ = pool[idx].contiguous()
        self.bank_owner_ = owner[idx].contiguous()
        self.grid_ = (h, w)

    def _calibration_scores(self, train):
        # the same filter as in _fit, so index i is the image whose patches carry owner id i
        normal = [s for s in train if s.label == 0]
        pre = self._preprocess()
        scores = []
        for i, s in enumerate(normal[:16]):
            x, _ = pre.batch([s.load_image()])
            emb = _embed(self.teacher_, x, self.layers)[0]
            q = emb.reshape(emb.shape[0], -1).T
            d = _nn_dist(q, self.bank_, exclude=self.bank_owner_ == i)
            scores.append(float(d.max()))
        return np.asarray(scores)

    def _predict_batch(self, images):
        pre = self._preprocess()
        x, geoms = pre.batch(images)
        emb = _embed(self.teacher_, x, self.layers)
        b, c, h, w = emb.shape
        q = emb.permute(0, 2, 3, 1).reshape(-1, c)
        d = _nn_dist(q, self.bank_).reshape(b, 1, h, w)
        scores = d.flatten(1).max(1).values.numpy()
        up = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        up = gaussian_blur_maps(up, self.smoothing_sigma)
        maps = [g.restore(m) for g, m in zip(geoms, up)]
        return Prediction(scores.astype(np.float32), maps)

    def _state_tensors(self):
        return {"bank": self.bank_, "bank_owner": self.bank_owner_}

    def _extra_state(self):
        return {"grid": list(self.grid_)}

    def _load_state(self, tensors, extra):
        self.bank_ = tensors["bank"]
        self.bank_owner_ = tensors["bank_owner"]
        self.grid_ = tuple(extra["grid"])
