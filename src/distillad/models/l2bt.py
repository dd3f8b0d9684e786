"""L2BT: "Learning to Be a Transformer to Pinpoint Anomalies" (Costanzino et al., IEEE Access
2024; ../shared/seeds/002_61d4912bcbf639ba.txt), with the reference-code facts of METHODS.md.

Two shallow MLPs (the Students) learn, on normal images only, the mappings between the patch
embeddings of two layers j < k of a frozen Transformer (the Teacher): the Forward Student maps
layer j to layer k ("contextualisation"), the Backward Student maps k to j. Where they fail to
predict the Teacher, the image is anomalous.

What follows which part of the paper
------------------------------------
- Teacher (sec. III-C, IV-B.2): DINOv2-reg ViT-B/14, layers j = 8 and k = 12 (1-indexed block
  outputs), final LayerNorm applied to both (METHODS.md), patch tokens only (CLS and registers
  dropped). Any ViT teacher works (sec. V-F); `layers` picks another pair (sec. V-H, table 7);
  `auto_layers=True` picks, among `layer_candidates`, the pair with the lowest training
  reconstruction error, which is what sec. V-H proposes.
- Students (sec. III-D, IV-B.2, fig. 5): Linear(D, D) -> GELU -> Linear(D, D) -> GELU ->
  Linear(D, D), PyTorch default initialisation, exact (erf) GELU as in DINOv2, shared across
  patches: every patch is an independent sample.
- Training (sec. III-E, algorithm 1): loss = (1 - mean cosine) forward + (1 - mean cosine)
  backward, both students trained jointly with Adam, 50 epochs, 4 images per step (all patches
  of each), no schedule, no augmentation, one model per class. The learning rate is 1e-4, the
  reference code's value: the paper's text says 0.001 (sec. IV-B.2); set `lr=1e-3` for that.
  The Teacher is frozen and nothing is augmented, so its features are computed once and cached
  (`FeatureCache`, in memory up to `cache_budget_mb`, spilled to disk beyond).
- Inference (sec. III-F, algorithm 2, eq. 3): per layer, L2 distance between the L2-normalised
  true and predicted features (not squared; METHODS.md); fusion by product (`fusion="sum"`,
  `"forward"` (Delta_k alone) and `"backward"` (Delta_j alone) give the rows of table 9);
  bilinear upsampling to the original image, padding removed (sec. IV-B.1), Gaussian smoothing,
  image score = mean of the top M pixels of the final map, M = 0.001 * H * W (H x W = the
  original image).
- Input (sec. IV-B.2, METHODS.md): pad to a square with edge padding, centred, bicubic resize
  to 1036 px (74 x 74 patches of 14 px). Any multiple of the patch size can be asked for.
- Few-shot (sec. V-E, table 3): nothing method-specific: train on `distillad.data.few_shot(split,
  k, seed)`.

What the paper leaves open, and what is chosen here
---------------------------------------------------
- Smoothing: the paper says "smoothed according to common practice" without a sigma; the
  reference code applies repeated box filters, about a Gaussian of sigma 4.7 px at the 1036 px
  working resolution. Here `smoothing_sigma` is in pixels of the model input (default 4.7,
  i.e. a third of a ViT/14 patch) and is applied once, with OpenCV, to the map *after* it has
  been restored to the original image (padding already cut, so the low values of the padding
  never bleed into the image border): sigma is scaled by original size / model size, so the
  smoothing covers the same part of the image whatever the original resolution. Cost: one
  separable blur of an H x W float map, a few ms (see benchmarks/bench_l2bt.py).
- Default layers for teachers other than the paper's 12-block ViTs: the paper only speaks of
  12-block ViTs. For a ViT of depth L the default is (round(2L/3), L), which is (8, 12) at
  L = 12. For CNN teachers see below.
- `auto_layers`: the paper says the best pair is the one with the lowest reconstruction error at
  training time, without saying how it is measured. Here every candidate pair is trained with
  the full schedule, then its error is the loss (both directions) of the trained students over
  all training images; the pair with the lowest error is kept (ties: the first candidate).
  Default candidates: the pairs of table 7, rescaled to the teacher's depth.
- Images of different sizes in one batch are each padded and resized on their own.

CNN teachers (an offline variant; not in the paper)
---------------------------------------------------
With a CNN teacher (e.g. `tf_efficientnet_lite0`, whose ImageNet weights exist here), "layer j"
is feature stage j (timm `features_only` order, 1-indexed) and a "patch" is one cell of a
feature map. What changes against the paper:
- two stages have different strides, so they are brought to one grid (`cnn_grid`): "coarse"
  (default) average-pools the finer stage onto the coarser grid (each coarse cell sees the mean
  of the fine cells it covers); "fine" bilinearly upsamples the coarser stage onto the finer grid;
- the stages have different widths, so the students are C_j -> H -> H -> C_k and
  C_k -> H -> H -> C_j with H = max(C_j, C_k) unless `hidden_dim` is given;
- there is no final norm (`final_norm` must be left at None or False);
- default layers: the last two stages but one, (L-2, L-1) (stages 3 -> 4 for EfficientNet-Lite0's
  5 stages: 40 channels at stride 8 -> 112 channels at stride 16), the same stages the `knn`
  reference detector reads, so that a comparison of the two differs only in the method;
- default image size 256 px (pad to square + resize, as for the ViT) rather than 1036: ImageNet
  CNNs are trained near 224 px and their receptive field does not grow with the input. In the
  quick experiment of docs/l2bt.md (MTSD subsample), 512 px gave no consistent gain over 256 px
  (better AUPRO@30 %, worse P-AUROC and I-AUROC depending on the pair) for 4-5 times the CPU time.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.samples import Sample
from ..data.transforms import Geometry, Preprocess
from ..errors import ModelFileError
from ..training import Checkpointer, FeatureCache, seed_everything
from .base import Detector, Prediction, register_model

log = logging.getLogger(__name__)

FUSIONS = ("product", "sum", "forward", "backward")
PREPROCESS_MODES = ("pad_resize", "resize")
CNN_GRIDS = ("coarse", "fine")
#: the layer pairs of the paper's table 7 (for a 12-block ViT)
PAPER_PAIRS = ((1, 4), (4, 8), (8, 12), (10, 12), (11, 12))
DEFAULT_VIT_PATCHES = 74  # 1036 / 14: the paper's 74 x 74 patch grid
DEFAULT_CNN_SIZE = 256  # CNN variant (not in the paper): see the module docstring


def student_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Three linear layers, GELU after the first two (sec. IV-B.2, fig. 5)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                         nn.GELU(), nn.Linear(hidden_dim, out_dim))


def cosine_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity over patches (eq. 2, averaged over the batch's patches)."""
    return 1.0 - F.cosine_similarity(pred, true, dim=-1).mean()


def normalised_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Eq. 3 on L2-normalised features: ||t/|t| - p/|p|||_2 per row (in [0, 2])."""
    return (F.normalize(true, dim=-1) - F.normalize(pred, dim=-1)).norm(dim=-1)


def fuse(delta_j: torch.Tensor, delta_k: torch.Tensor, fusion: str) -> torch.Tensor:
    """Sec. III-F / table 9: product (default), sum, forward only (Delta_k), backward only (Delta_j)."""
    if fusion == "product":
        return delta_j * delta_k
    if fusion == "sum":
        return delta_j + delta_k
    if fusion == "forward":
        return delta_k
    if fusion == "backward":
        return delta_j
    raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")


def top_mean(amap: np.ndarray, fraction: float) -> float:
    """Mean of the top M = max(1, floor(fraction * H * W)) values (sec. III-F, IV-B.2)."""
    flat = amap.reshape(-1)
    m = max(1, int(fraction * flat.size))
    return float(np.partition(flat, flat.size - m)[flat.size - m:].mean())


@register_model
class L2BT(Detector):
    """L2BT detector (see the module docstring for the paper sections and open choices).

    Parameters (None = the default for the teacher's kind, resolved in `fit` and saved)
    ----------
    teacher: a Teacher, a registry name or a teacher file. Default: the paper's DINOv2-reg ViT-B/14
        (its weights must be provided locally; offline, use "tf_efficientnet_lite0").
    layers: (j, k), 1-indexed, j < k. None: (8, 12) for 12-block ViTs, (round(2L/3), L) for other
        ViT depths, (L-2, L-1) for CNNs.
    final_norm: apply the ViT's final LayerNorm to both layers. None: True for ViTs (paper);
        CNNs have none.
    image_size: side of the square model input, a multiple of the teacher's `input_multiple`.
        None: 74 patches (1036 px for /14 ViTs) for ViTs, 256 for CNNs.
    preprocess_mode: "pad_resize" (paper: edge-pad to a square, centred, then resize) or "resize".
    interpolation: image resizing ("bicubic" as in the reference code).
    cnn_grid: CNN teachers only: "coarse" (pool the finer stage) or "fine" (upsample the coarser).
    hidden_dim: students' hidden width. None: the teacher's width (768 for ViT-B, as in the
        paper), max(C_j, C_k) for CNNs.
    epochs, batch_size, lr: 50, 4 images per step, Adam 1e-4 (reference code; paper text 1e-3).
    fusion: "product" (paper), "sum", "forward", "backward" (table 9).
    smoothing_sigma: Gaussian sigma in model-input pixels (0 disables); see the module docstring.
    top_k_fraction: M = top_k_fraction * H * W pixels averaged for the image score.
    auto_layers: choose among `layer_candidates` the pair with the lowest training error (sec. V-H).
    layer_candidates: pairs for `auto_layers`. None: table 7's pairs rescaled to the depth (ViT),
        all (j, j+1) stage pairs (CNN).
    cache_budget_mb: memory for cached teacher features; beyond it they spill to `cache_dir`
        (a temporary folder when None).
    checkpoint_every: optimiser steps between checkpoints when `fit(checkpoint_dir=...)`.
    seed: seeds the students' initialisation and the image order of every epoch.
    device: torch device for teacher and students.
    """

    name = "l2bt"
    version = 1

    def __init__(self, teacher="dinov2_vitb14_reg", *, layers=None, final_norm=None, image_size=None,
                 preprocess_mode="pad_resize", interpolation="bicubic", cnn_grid="coarse", hidden_dim=None,
                 epochs=50, batch_size=4, lr=1e-4, fusion="product", smoothing_sigma=4.7,
                 top_k_fraction=0.001, auto_layers=False, layer_candidates=None, cache_budget_mb=2048,
                 cache_dir=None, checkpoint_every=100, seed=0, device="cpu"):
        self.teacher = teacher
        self.layers = layers
        self.final_norm = final_norm
        self.image_size = image_size
        self.preprocess_mode = preprocess_mode
        self.interpolation = interpolation
        self.cnn_grid = cnn_grid
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.fusion = fusion
        self.smoothing_sigma = smoothing_sigma
        self.top_k_fraction = top_k_fraction
        self.auto_layers = auto_layers
        self.layer_candidates = layer_candidates
        self.cache_budget_mb = cache_budget_mb
        self.cache_dir = cache_dir
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ configuration
    def _check_params(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"l2bt: unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.preprocess_mode not in PREPROCESS_MODES:
            raise ValueError(f"l2bt: preprocess_mode must be one of {', '.join(PREPROCESS_MODES)}, "
                             f"got {self.preprocess_mode!r}")
        if self.cnn_grid not in CNN_GRIDS:
            raise ValueError(f"l2bt: cnn_grid must be one of {', '.join(CNN_GRIDS)}, got {self.cnn_grid!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"l2bt: {name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"l2bt: lr must be > 0, got {self.lr!r}")
        if not 0 < self.top_k_fraction <= 1:
            raise ValueError(f"l2bt: top_k_fraction must be in (0, 1], got {self.top_k_fraction!r}")
        if self.smoothing_sigma < 0:
            raise ValueError(f"l2bt: smoothing_sigma must be >= 0, got {self.smoothing_sigma!r}")

    def _resolve(self, teacher) -> dict:
        """Turn the None defaults into concrete values for this teacher (saved as extra state)."""
        kind = teacher.kind
        if kind not in ("vit", "cnn"):
            raise ValueError(f"l2bt needs a ViT or CNN teacher with several layers; {teacher.name} is a {kind!r} teacher")
        L = teacher.num_layers
        if L < 2:
            raise ValueError(f"l2bt: teacher {teacher.name} has {L} layer(s); two are needed")
        if self.layers is not None:
            pair = _as_pair(self.layers, "layers")
        elif kind == "vit":
            pair = (8, 12) if L == 12 else (max(1, min(L - 1, round(2 * L / 3))), L)
        else:
            pair = (max(1, L - 2), L - 1) if L >= 3 else (1, 2)
        final_norm = self.final_norm
        if final_norm is None:
            final_norm = kind == "vit"
        if kind == "cnn" and final_norm:
            raise ValueError(f"l2bt: final_norm=True has no meaning for the CNN teacher {teacher.name}")
        size = self.image_size
        if size is None:
            size = DEFAULT_VIT_PATCHES * teacher.input_multiple if kind == "vit" else DEFAULT_CNN_SIZE
        size = int(size)
        if size < 1 or size % teacher.input_multiple:
            raise ValueError(f"l2bt: image_size {size} is not a positive multiple of {teacher.input_multiple}, "
                             f"the input multiple of teacher {teacher.name}")
        if self.auto_layers:
            cands = self.layer_candidates
            if cands is None:
                if kind == "vit":
                    cands = sorted({(max(1, round(j * L / 12)), max(1, round(k * L / 12))) for j, k in PAPER_PAIRS})
                    cands = [c for c in cands if c[0] < c[1]]
                else:
                    cands = [(j, j + 1) for j in range(1, L)]
            cands = [_as_pair(c, "layer_candidates") for c in cands]
            if not cands:
                raise ValueError("l2bt: auto_layers=True needs at least one candidate pair")
        else:
            cands = [pair]
        for j, k in cands:
            teacher.check_layers([j, k])
        return {"kind": kind, "layers": list(pair), "final_norm": bool(final_norm), "image_size": size,
                "candidates": [list(c) for c in cands]}

    def _hidden(self, cj: int, ck: int) -> int:
        return int(self.hidden_dim) if self.hidden_dim is not None else max(cj, ck)

    def _preprocess(self) -> Preprocess:
        return Preprocess(self.resolved_["image_size"], mode=self.preprocess_mode, interpolation=self.interpolation)

    # ------------------------------------------------------------------ teacher features
    def _teacher_maps(self, x: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Feature maps B x C x h x w of the requested layers (ViT: patch tokens only)."""
        feats = self.teacher_(x.to(self.device), list(layers), final_norm=self.resolved_["final_norm"])
        return {j: feats.maps[j].float() for j in layers}

    def _align(self, fj: torch.Tensor, fk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bring two maps (B x C x h x w) to one grid (CNN stages; ViT layers already share one)."""
        if fj.shape[-2:] == fk.shape[-2:]:
            return fj, fk
        fine_is_j = fj.shape[-1] > fk.shape[-1]
        fine, coarse = (fj, fk) if fine_is_j else (fk, fj)
        if self.cnn_grid == "coarse":
            fine = F.adaptive_avg_pool2d(fine, coarse.shape[-2:])
        else:
            coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return (fine, coarse) if fine_is_j else (coarse, fine)

    @staticmethod
    def _tokens(m: torch.Tensor) -> torch.Tensor:
        """B x C x h x w -> (B*h*w) x C: every patch an independent sample."""
        return m.permute(0, 2, 3, 1).reshape(-1, m.shape[1])

    # ------------------------------------------------------------------ training
    def _fit(self, train: list[Sample], *, checkpoint_dir: Path | None, resume: bool, progress: bool) -> None:
        from tqdm.auto import tqdm

        self._check_params()
        train = [s for s in train if s.label == 0]  # students see nominal images only (sec. III-E)
        if not train:
            raise ValueError("l2bt.fit: no normal training image (label 0)")
        self.teacher_ = self._make_teacher().to(self.device)
        self.resolved_ = self._resolve(self.teacher_)
        cands = [tuple(c) for c in self.resolved_["candidates"]]
        needed = sorted({j for c in cands for j in c})
        pre = self._preprocess()

        cache = FeatureCache(int(self.cache_budget_mb * 1024**2), self.cache_dir)
        try:
            bs = self.batch_size
            for i in tqdm(range(0, len(train), bs), desc="l2bt teacher features", disable=not progress, leave=False):
                x, _ = pre.batch([s.load_image() for s in train[i : i + bs]])
                maps = self._teacher_maps(x, needed)
                for b in range(x.shape[0]):
                    cache.put(i + b, {str(j): maps[j][b].clone(memory_format=torch.contiguous_format) for j in needed})
            if cache.spilled:
                log.info("l2bt: %d of %d images' teacher features spilled to disk (budget %s MB)",
                         cache.spilled, len(cache), self.cache_budget_mb)
            self.cache_stats_ = {"in_memory_bytes": cache.used, "spilled_images": cache.spilled, "images": len(cache)}

            results = {}
            for pair in cands:
                ck_dir = None
                if checkpoint_dir is not None:
                    ck_dir = checkpoint_dir if len(cands) == 1 else checkpoint_dir / f"layers_{pair[0]}_{pair[1]}"
                students, history = self._train_pair(cache, len(train), pair, ck_dir, resume, progress)
                error = self._training_error(cache, len(train), pair, students)
                results[pair] = (error, students, history)
                if len(cands) > 1:
                    log.info("l2bt: layers %s training reconstruction error %.5f", pair, error)
        finally:
            cache.close()

        best = min(cands, key=lambda c: results[c][0])  # min keeps the first on ties
        self.layers_ = best
        self.students_ = results[best][1]
        self.loss_history_ = results[best][2]
        self.layer_errors_ = {f"{j},{k}": results[(j, k)][0] for j, k in cands}

    def _pair_batch(self, cache: FeatureCache, idx: Sequence[int], pair) -> tuple[torch.Tensor, torch.Tensor]:
        j, k = pair
        fj = torch.stack([cache.get(int(i))[str(j)] for i in idx])
        fk = torch.stack([cache.get(int(i))[str(k)] for i in idx])
        fj, fk = self._align(fj, fk)
        return self._tokens(fj).to(self.device), self._tokens(fk).to(self.device)

    def _new_students(self, pair) -> nn.ModuleDict:
        j, k = pair
        cj, ck = self.teacher_.channels(j), self.teacher_.channels(k)
        h = self._hidden(cj, ck)
        return nn.ModuleDict({"forward_student": student_mlp(cj, h, ck), "backward_student": student_mlp(ck, h, cj)}).to(self.device)

    def _epoch_order(self, epoch: int, n: int) -> torch.Tensor:
        # one generator per epoch: a resumed run draws exactly the order the uninterrupted one drew
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)

    def _train_pair(self, cache, n, pair, ck_dir, resume, progress):
        """Algorithm 1 for one layer pair: both students, jointly, Adam, cosine losses (eq. 2)."""
        from tqdm.auto import tqdm

        seed_everything(self.seed)
        students = self._new_students(pair)
        opt = torch.optim.Adam(students.parameters(), lr=self.lr)
        steps_per_epoch = math.ceil(n / self.batch_size)
        total = self.epochs * steps_per_epoch
        run_id = {"layers": list(pair), "n_train": n, "batch_size": self.batch_size, "lr": self.lr,
                  "seed": self.seed, "image_size": self.resolved_["image_size"], "teacher": self.teacher_.fingerprint(),
                  "final_norm": self.resolved_["final_norm"], "hidden_dim": self.hidden_dim, "cnn_grid": self.cnn_grid,
                  "preprocess_mode": self.preprocess_mode}
        ckpt = Checkpointer(ck_dir, every=self.checkpoint_every) if ck_dir is not None else None
        step, history, running = 0, [], [0.0, 0.0, 0]
        if ckpt is not None and resume and ckpt.exists():
            step, extra = ckpt.load({"students": students}, {"adam": opt})
            if extra.get("run") != run_id:
                raise ModelFileError(f"{ck_dir}: checkpoint was written by another l2bt configuration "
                                     f"({extra.get('run')}) than this one ({run_id}); use another checkpoint_dir")
            history, running = extra["history"], extra["running"]
            log.info("l2bt: resumed layers %s at step %d of %d", pair, step, total)
        students.train()
        bar = tqdm(total=total, initial=step, desc=f"l2bt train {pair[0]}->{pair[1]}", disable=not progress, leave=False)
        while step < total:
            epoch, b = divmod(step, steps_per_epoch)
            idx = self._epoch_order(epoch, n)[b * self.batch_size : (b + 1) * self.batch_size]
            fj, fk = self._pair_batch(cache, idx, pair)
            loss_f = cosine_loss(students["forward_student"](fj), fk)
            loss_b = cosine_loss(students["backward_student"](fk), fj)
            loss = loss_f + loss_b
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running = [running[0] + loss_f.item(), running[1] + loss_b.item(), running[2] + 1]
            if step % steps_per_epoch == 0:  # end of an epoch: record its mean losses
                history.append({"epoch": epoch + 1, "forward": running[0] / running[2], "backward": running[1] / running[2]})
                running = [0.0, 0.0, 0]
                bar.set_postfix(loss=f"{history[-1]['forward'] + history[-1]['backward']:.4f}")
            if ckpt is not None and (ckpt.due(step) or step == total):
                ckpt.save(step, {"students": students}, {"adam": opt},
                          extra={"run": run_id, "history": history, "running": running})
            bar.update(1)
        bar.close()
        students.eval()
        return students, history

    @torch.no_grad()
    def _training_error(self, cache, n, pair, students) -> float:
        """Sec. V-H: reconstruction error (both cosine losses) of trained students on the training set."""
        total, count = 0.0, 0
        for i in range(0, n, self.batch_size):
            idx = list(range(i, min(n, i + self.batch_size)))
            fj, fk = self._pair_batch(cache, idx, pair)
            err = (1 - F.cosine_similarity(students["forward_student"](fj), fk, dim=-1)) + \
                  (1 - F.cosine_similarity(students["backward_student"](fk), fj, dim=-1))
            total += err.sum().item()
            count += err.numel()
        return total / count

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def patch_deltas(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Delta_j, Delta_k (eq. 3) on the patch grid, B x h x w, for a preprocessed batch."""
        self._check_fitted("patch_deltas")
        j, k = self.layers_
        maps = self._teacher_maps(x, [j, k])
        fj, fk = self._align(maps[j], maps[k])
        B, _, h, w = fj.shape
        tj, tk = self._tokens(fj), self._tokens(fk)
        delta_k = normalised_l2(self.students_["forward_student"](tj), tk)
        delta_j = normalised_l2(self.students_["backward_student"](tk), tj)
        return delta_j.view(B, h, w), delta_k.view(B, h, w)

    def _predict_batch(self, images: list[np.ndarray]) -> Prediction:
        x, geoms = self._preprocess().batch(images)
        delta_j, delta_k = self.patch_deltas(x)
        fused = fuse(delta_j, delta_k, self.fusion).cpu().numpy()
        maps, scores = [], []
        for m, g in zip(fused, geoms):
            amap = self._restore_and_smooth(m, g)
            maps.append(amap)
            scores.append(top_mean(amap, self.top_k_fraction))
        return Prediction(np.asarray(scores, np.float32), maps)

    def _restore_and_smooth(self, patch_map: np.ndarray, g: Geometry) -> np.ndarray:
        """Bilinear upsampling to the original image, padding cut (Geometry.restore), then the
        Gaussian blur with sigma converted from model-input pixels to original pixels."""
        amap = g.restore(patch_map)
        if self.smoothing_sigma > 0:
            H, W = g.orig_hw
            pt, pb, pl, pr = g.pad
            sy = self.smoothing_sigma * (H + pt + pb) / g.resized_hw[0]
            sx = self.smoothing_sigma * (W + pl + pr) / g.resized_hw[1]
            amap = cv2.GaussianBlur(amap, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)
        return amap.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"students.{k}": v for k, v in self.students_.state_dict().items()}

    def _extra_state(self) -> dict:
        return {"resolved": self.resolved_, "layers": list(self.layers_), "loss_history": self.loss_history_,
                "layer_errors": self.layer_errors_}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict) -> None:
        self._check_params()
        self.teacher_ = self.teacher_.to(self.device)
        self.resolved_ = extra["resolved"]
        self.layers_ = tuple(extra["layers"])
        self.teacher_.check_layers(self.layers_)
        self.loss_history_ = extra.get("loss_history", [])
        self.layer_errors_ = extra.get("layer_errors", {})
        self.students_ = self._new_students(self.layers_)
        self.students_.load_state_dict({k[len("students."):]: v for k, v in tensors.items()
                                        if k.startswith("students.")}, strict=True)
        self.students_.eval()


def _as_pair(value, what: str) -> tuple[int, int]:
    try:
        j, k = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"l2bt: {what} must be pairs (j, k) of layer numbers, got {value!r}") from None
    if not j < k:
        raise ValueError(f"l2bt: {what} needs j < k (j the shallower layer), got ({j}, {k})")
    return j, k
