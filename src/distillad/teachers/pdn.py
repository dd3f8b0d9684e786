"""Patch Description Network (PDN) teachers and their pretraining.

The PDN is EfficientAD's teacher (Batzner et al., 2024), which the HKT paper adopts
(004_f53e0b7a727d9625.txt, section 2.2 and section 3.2; figure 3a/3c). Layer shapes follow
METHODS.md (hkt):

- PDN-S (`pdn_s`): Conv4(3,128) ReLU, AvgPool2 s2, Conv4(128,256) ReLU, AvgPool2 s2,
  Conv3(256,256) ReLU, Conv4(256,384).
- PDN-M (`pdn_m`): Conv4(3,256) ReLU, AvgPool, Conv4(256,512) ReLU, AvgPool, Conv1(512,512) ReLU,
  Conv3(512,512) ReLU, Conv4(512,384) ReLU, Conv1(384,384).

Without padding a 256 x 256 input gives a 56 x 56 x 384 map; every output cell describes a
33 x 33 input patch (stride 4). The network is fully convolutional and takes any size >= 33 px.

As a `distillad.teachers.Teacher` a PDN has kind "pdn" and one layer: layer 1 = its 384-channel
output, standardised per channel by the buffers `out_mean` / `out_std`. `pretrain_pdn` sets these
to the output statistics over the pretraining images (identity for a random PDN); a detector
such as HKT standardises once more with the statistics of its own training set (EfficientAD
practice), so both levels are documented and neither is hidden.

Pretraining (`pretrain_pdn`) regresses the features of a frozen ImageNet CNN. Reference
(EfficientAD, METHODS.md): WideResNet-101 layer2 + layer3 at 512 px, 3x3 local average, layer3
upsampled to layer2's grid, channels reduced to 384 by adaptive average pooling, targets
standardised per channel; MSE; Adam lr 1e-4, wd 1e-5; the PDN sees the same image at 256 px with
padding so its 64 x 64 output lies on the source's stride-8 grid. Offline here the default source
is EfficientNet-Lite2 (`tf_efficientnet_lite2`, the only real ImageNet CNN available without a
download); its stride-8 and stride-16 stages play the roles of layer2 and layer3. Which source CNN,
layers and images made a teacher file is recorded in its JSON sidecar.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ModelFileError, WeightsNotFoundError
from ..io import read_json, read_tensors, write_json, write_tensors
from .base import Teacher, TeacherFeatures

log = logging.getLogger(__name__)

OUT_CHANNELS = 384
#: (kind, out_channels, kernel, padding in the padded pretraining form) per layer; "pool" =
#: AvgPool2d(2, 2) (padding 1 when padded). Hidden widths scale with `width`; "out" = 384.
PDN_LAYOUTS = {
    "s": [("conv", 128, 4, 3), ("relu",), ("pool",), ("conv", 256, 4, 3), ("relu",), ("pool",),
          ("conv", 256, 3, 1), ("relu",), ("conv", "out", 4, 0)],
    "m": [("conv", 256, 4, 3), ("relu",), ("pool",), ("conv", 512, 4, 3), ("relu",), ("pool",),
          ("conv", 512, 1, 0), ("relu",), ("conv", 512, 3, 1), ("relu",), ("conv", "out", 4, 0), ("relu",),
          ("conv", "out", 1, 0)],
}
PRETRAIN_COMMAND = "distillad teachers pretrain-pdn --images <folder of images> --out <file>.safetensors"


def build_pdn(variant: str = "s", *, out_channels: int = OUT_CHANNELS, width: float = 1.0,
              padding: bool = False) -> nn.Sequential:
    """The plain PDN as an `nn.Sequential` (EfficientAD's `get_pdn_small` / `get_pdn_medium`).

    `padding=True` is the pretraining form (EfficientAD's paddings: 256 px -> 64 x 64);
    it has the same parameters as the unpadded form used for inference (256 px -> 56 x 56).
    `width` scales the hidden channels (1.0 = the paper; small values only for tests).
    """
    if variant not in PDN_LAYOUTS:
        raise ValueError(f"unknown PDN variant {variant!r}; use 's' or 'm'")
    layers: list[nn.Module] = []
    c_in = 3
    for spec in PDN_LAYOUTS[variant]:
        if spec[0] == "conv":
            c_out = out_channels if spec[1] == "out" else max(1, int(round(spec[1] * width)))
            layers.append(nn.Conv2d(c_in, c_out, spec[2], padding=spec[3] if padding else 0))
            c_in = c_out
        elif spec[0] == "relu":
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.AvgPool2d(2, 2, padding=1 if padding else 0))
    return nn.Sequential(*layers)


class PDNTeacher(Teacher):
    """A frozen PDN as a Teacher (kind "pdn", one layer: the standardised 384-channel output)."""

    kind = "pdn"
    num_layers = 1
    input_multiple = 1

    def __init__(self, variant: str = "s", *, out_channels: int = OUT_CHANNELS, width: float = 1.0):
        super().__init__()
        self.variant = variant
        self.name = f"pdn_{variant}"
        self.config = {"out_channels": int(out_channels), "width": float(width)}
        self.net = build_pdn(variant, out_channels=out_channels, width=width)
        self.register_buffer("out_mean", torch.zeros(1, out_channels, 1, 1))
        self.register_buffer("out_std", torch.ones(1, out_channels, 1, 1))
        self.meta: dict = {}  # the JSON sidecar of a pretrained teacher file (source CNN, images, ...)

    def channels(self, layer: int) -> int:
        return self.config["out_channels"]

    def stride(self, layer: int) -> int:
        return 4

    def extract(self, x: torch.Tensor, layers: Sequence[int], *, final_norm: bool = False,
                return_tokens: bool = False) -> TeacherFeatures:
        y = (self.net(x) - self.out_mean) / self.out_std
        return TeacherFeatures(maps={1: y}, globals={1: y.mean(dim=(2, 3))})

    def load_file(self, path: str | os.PathLike) -> "PDNTeacher":
        """Load weights (and output statistics) from a teacher file written by `pretrain_pdn`."""
        path = Path(path)
        sd = read_tensors(path)
        try:
            self.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ModelFileError(f"{path}: weights do not fit {self.name} with config {self.config} ({e})") from None
        self.weights_source = str(path)
        side = path.with_suffix(".json")
        self.meta = read_json(side) if side.exists() else {}
        self._fingerprint_cache = None
        return self


def _builder(variant: str):
    def build(weights=None, seed: int = 0, **config) -> PDNTeacher:
        if weights == "random":  # seeded like the registry's other random teachers
            with torch.random.fork_rng():
                torch.manual_seed(int(seed))
                t = PDNTeacher(variant, **config)
        else:
            t = PDNTeacher(variant, **config)
        if weights is None:  # the registry's offline default: $DISTILLAD_WEIGHTS/pdn_<variant>.safetensors
            from .weights import find_in_env_folder
            found = find_in_env_folder(f"pdn_{variant}")
            if found is not None and found.path.suffix == ".safetensors":
                return t.load_file(found.path).freeze()
            raise WeightsNotFoundError(
                f"pdn_{variant}: no pretrained PDN weights ship with distillad (a PDN is pretrained by "
                f"distilling an ImageNet CNN). Run `{PRETRAIN_COMMAND} --variant {variant}` and pass the "
                f"resulting file (teachers.create('<file>.safetensors'), weights='<file>.safetensors', or "
                f"$DISTILLAD_WEIGHTS/pdn_{variant}.safetensors); "
                f"weights='random' gives an untrained PDN")
        if weights == "random":
            t.weights_source = "random"
        else:
            p = Path(weights)
            if not p.exists():
                raise WeightsNotFoundError(f"pdn_{variant}: weights file {p} not found; create one with `{PRETRAIN_COMMAND}`")
            t.load_file(p)
        return t.freeze()
    return build


def _register() -> None:
    from .registry import register_teacher
    register_teacher("pdn_s", _builder("s"), kind="pdn",
                     description="EfficientAD Patch Description Network, small (HKT teacher); pretrain with `distillad teachers pretrain-pdn`")
    register_teacher("pdn_m", _builder("m"), kind="pdn",
                     description="EfficientAD Patch Description Network, medium (HKT+ teacher); pretrain with `distillad teachers pretrain-pdn --variant m`")


# --------------------------------------------------------------------------- pretraining
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _image_list(images) -> tuple[list, str]:
    """-> (list of paths / Samples, a description for the teacher file)."""
    from ..data.samples import Sample, Split
    if isinstance(images, Split):
        images = images.train
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if not root.is_dir():
            raise DataError(f"{root}: not a folder of images")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under this folder")
        return paths, f"{root.resolve()} ({len(paths)} images)"
    items = list(images)
    if not items:
        raise DataError("pretrain_pdn: the list of images is empty")
    roots = sorted({str(Path(s.image).parent) if isinstance(s, Sample) and not isinstance(s.image, np.ndarray)
                    else str(Path(s).parent) if isinstance(s, (str, os.PathLike)) else "<array>" for s in items})
    shown = ", ".join(roots[:5]) + (f", ... ({len(roots)} folders)" if len(roots) > 5 else "")
    return items, f"{len(items)} images from {shown}"


def _names(items, limit: int = 20_000) -> list[str] | None:
    """The pretraining images by path (None for in-memory arrays or more than `limit` images)."""
    from ..data.samples import Sample
    out = []
    for it in items[: limit + 1]:
        p = it.image if isinstance(it, Sample) else it
        if not isinstance(p, (str, os.PathLike)):
            return None
        out.append(str(p))
    return out if len(out) <= limit else None


def _load(item) -> np.ndarray:
    from ..data.samples import Sample, as_rgb_array, read_image
    if isinstance(item, Sample):
        return item.load_image()
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)
    return as_rgb_array(item)


class SourceFeatures(nn.Module):
    """Pretraining targets from a frozen CNN teacher (EfficientAD's / PatchCore's feature extractor).

    For each chosen stage: 3x3 local average (stride 1), upsampled (bilinear) to the first stage's
    grid, channels pooled to `out_channels` (adaptive average over channels); the stages are
    concatenated and pooled again to `out_channels`; finally standardised with `mean`/`std`
    (buffers set by `fit_norm`). Differences from the reference: PatchCore averages over the 3x3
    neighbourhood and channels in one adaptive pool of the unfolded patch; here the local average
    and the channel pooling are two steps (the same linear averaging up to edge weighting).
    """

    def __init__(self, cnn: Teacher, layers: Sequence[int], out_channels: int = OUT_CHANNELS):
        super().__init__()
        self.cnn = cnn
        self.layers = [int(j) for j in layers]
        self.out_channels = out_channels
        self.register_buffer("mean", torch.zeros(1, out_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, out_channels, 1, 1))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.cnn(x, self.layers).maps
        first = feats[self.layers[0]]
        size = first.shape[-2:]
        parts = []
        for j in self.layers:
            f = F.avg_pool2d(feats[j], 3, stride=1, padding=1, count_include_pad=False)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            parts.append(_pool_channels(f, self.out_channels))
        return _pool_channels(torch.cat(parts, 1), self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.raw(x) - self.mean) / self.std


def _pool_channels(f: torch.Tensor, c: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis: B x C_in x h x w -> B x c x h x w."""
    b, ci, h, w = f.shape
    if ci == c:
        return f
    flat = f.permute(0, 2, 3, 1).reshape(b * h * w, 1, ci)
    return F.adaptive_avg_pool1d(flat, c).reshape(b, h, w, c).permute(0, 3, 1, 2)


def channel_stats(batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (1 x C x 1 x 1) over all positions of all maps in `batches`
    (float64 running sums, as EfficientAD's `teacher_normalization`: mean first, then std)."""
    s = s2 = None
    n = 0
    for y in batches:
        y = y.double()
        cs, cs2 = y.sum(dim=(0, 2, 3)), (y * y).sum(dim=(0, 2, 3))
        s = cs if s is None else s + cs
        s2 = cs2 if s2 is None else s2 + cs2
        n += y.shape[0] * y.shape[2] * y.shape[3]
    if not n:
        raise ValueError("channel_stats: no feature maps given")
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
    std = var.sqrt().clamp_min(1e-6)
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def _default_source_layers(cnn: Teacher) -> list[int]:
    """The stages at stride 8 and 16 (WideResNet's layer2 and layer3 in the reference)."""
    by_stride = {cnn.stride(j): j for j in range(1, cnn.num_layers + 1)}
    if 8 in by_stride and 16 in by_stride:
        return [by_stride[8], by_stride[16]]
    raise ValueError(f"source CNN {cnn.name}: no stages at stride 8 and 16 (strides "
                     f"{sorted(by_stride)}); pass source_layers explicitly")


def pretrain_pdn(images, out_path: str | os.PathLike, source: str | Teacher = "tf_efficientnet_lite2", *,
                 variant: str = "s", steps: int = 60_000, batch_size: int = 16, lr: float = 1e-4,
                 weight_decay: float = 1e-5, image_size: int = 256, source_size: int | None = None,
                 source_layers: Sequence[int] | None = None, grayscale_p: float = 0.1,
                 norm_images: int = 64, out_channels: int = OUT_CHANNELS, width: float = 1.0,
                 seed: int = 0, resume: bool = True, checkpoint_dir: str | os.PathLike | None = None,
                 checkpoint_every: int = 100, progress: bool = True) -> Path:
    """Pretrain a PDN teacher by regressing a frozen ImageNet CNN's features; write a teacher file.

    images: a folder (searched recursively), a list of image paths / Samples / arrays, or a Split
        (its training images). The reference uses ImageNet; any natural or in-domain images work.
    out_path: `<x>.safetensors`; a JSON sidecar `<x>.json` records the registry name, config,
        source CNN (name, weights, layers, input size), images, steps and the loss curve, so that
        `teachers.create("<x>.safetensors")` rebuilds the teacher.
    source: a registered CNN teacher name (default: EfficientNet-Lite2, offline) or a Teacher.
    steps, batch_size: reference (EfficientAD): 60,000 steps of batch 16 on ImageNet.
    source_size: the source CNN's input size (default 2 x image_size, as the reference: 512 vs 256).
    source_layers: 1-indexed source stages (default: the stride-8 and stride-16 stages).
    grayscale_p: probability of converting an image to grayscale (reference: RandomGrayscale(0.1)).
    norm_images: how many images estimate the target's channel mean/std (before training) and the
        PDN output's channel mean/std (after training, stored in the teacher as `out_mean/out_std`).
    resume: continue from the checkpoint in `checkpoint_dir` (default `<x>.ckpt/`) if one exists;
        the data order and augmentation come from a seeded generator saved in the checkpoint, so
        a resumed run continues the same loss curve.
    Returns the path of the teacher file.
    """
    from tqdm.auto import tqdm

    from ..data.transforms import Preprocess
    from ..training import Checkpointer, seed_everything
    from . import create

    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path}: a teacher file must end in .safetensors")
    if steps < 1 or batch_size < 1:
        raise ValueError("pretrain_pdn: steps and batch_size must be >= 1")
    items, images_desc = _image_list(images)
    source_size = int(source_size or 2 * image_size)
    cnn = source if isinstance(source, Teacher) else create(source)
    cnn.freeze()
    if cnn.kind != "cnn":
        raise ValueError(f"pretrain_pdn: the source must be a CNN teacher, got {cnn.name} ({cnn.kind})")
    layers = list(source_layers) if source_layers else _default_source_layers(cnn)
    cnn.check_layers(layers)

    gen = seed_everything(seed)
    pdn = build_pdn(variant, out_channels=out_channels, width=width, padding=True)
    target = SourceFeatures(cnn, layers, out_channels)
    opt = torch.optim.Adam(pdn.parameters(), lr=lr, weight_decay=weight_decay)
    pre_pdn, pre_src = Preprocess(image_size), Preprocess(source_size)

    def batch(idx: Sequence[int], gray: Sequence[bool]):
        arrays = []
        for i, g in zip(idx, gray):
            a = _load(items[i])
            if g:  # ITU-R 601 luma, as torchvision's RandomGrayscale
                y = (a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().clip(0, 255)
                a = np.repeat(y.astype(np.uint8)[..., None], 3, axis=2)
            arrays.append(a)
        return pre_pdn.batch(arrays)[0], pre_src.batch(arrays)[0]

    ckpt = Checkpointer(checkpoint_dir or out_path.with_suffix(".ckpt"), every=checkpoint_every)
    step, losses = 0, []
    state = ckpt.load({"pdn": pdn, "target": target}, {"adam": opt}, {"data": gen}) if resume else None
    if state is not None:
        step, extra = state
        losses = list(extra.get("losses", []))
        log.info("pretrain_pdn: resuming from step %d (%s)", step, ckpt.folder)
    else:  # target normalisation (EfficientAD: channel statistics of the extractor's features)
        n = min(norm_images, len(items))
        order = torch.randperm(len(items), generator=gen)[:n].tolist()
        target.mean.zero_()
        target.std.fill_(1.0)
        m, s = channel_stats(target(batch([i], [False])[1]) for i in order)
        target.mean.copy_(m)
        target.std.copy_(s)

    pdn.train()
    bar = tqdm(total=steps, initial=step, desc=f"pretrain pdn_{variant}", disable=not progress)
    while step < steps:
        idx = torch.randint(len(items), (batch_size,), generator=gen).tolist()
        gray = (torch.rand(batch_size, generator=gen) < grayscale_p).tolist()
        x_pdn, x_src = batch(idx, gray)
        y = target(x_src)
        pred = pdn(x_pdn)
        if pred.shape[-2:] != y.shape[-2:]:
            raise ValueError(f"pretrain_pdn: PDN output {tuple(pred.shape[-2:])} and source grid "
                             f"{tuple(y.shape[-2:])} differ; use source_size = 2 x image_size with stride-8 stages")
        loss = F.mse_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if ckpt.due(step) or step == steps:
            ckpt.save(step, {"pdn": pdn, "target": target}, {"adam": opt}, {"losses": losses}, {"data": gen})
    bar.close()

    # the teacher: the same weights without padding, output standardised over pretraining images
    teacher = PDNTeacher(variant, out_channels=out_channels, width=width)
    teacher.net.load_state_dict(pdn.state_dict())
    teacher.freeze()
    n = min(norm_images, len(items))
    order = torch.Generator().manual_seed(seed + 1)
    sel = torch.randperm(len(items), generator=order)[:n].tolist()
    m, s = channel_stats(teacher(batch([i], [False])[0], [1]).maps[1] for i in sel)
    teacher.out_mean.copy_(m)
    teacher.out_std.copy_(s)
    meta = {
        "teacher": teacher.name, "config": dict(teacher.config), "format": "distillad-teacher",
        "source_cnn": {"name": cnn.name, "weights": cnn.weights_source, "layers": layers,
                       "input_size": source_size, "fingerprint": cnn.fingerprint()},
        "images": images_desc, "num_images": len(items), "image_list": _names(items), "steps": step, "batch_size": batch_size,
        "image_size": image_size, "lr": lr, "weight_decay": weight_decay, "grayscale_p": grayscale_p,
        "seed": seed, "norm_images": n, "output_standardised_on": f"{n} pretraining images at {image_size} px",
        "final_loss": float(np.mean(losses[-min(len(losses), 100):])) if losses else None,
        "losses": losses,
    }
    write_tensors(out_path, teacher.state_dict(), {"teacher": teacher.name})
    write_json(out_path.with_suffix(".json"), meta)
    return out_path
