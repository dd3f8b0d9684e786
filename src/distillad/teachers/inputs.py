"""What every teacher does to its input before the network sees it.

The whole project feeds teachers the same tensors: RGB scaled to [0, 1] then normalised with
ImageNet mean/std (`data.transforms.Preprocess` default). Some pretrained networks were trained
with other statistics (timm's `tf_efficientnet_lite*` and `vit_base_patch16_224`: mean = std =
0.5), so the teacher maps ImageNet-normalised values to the network's own normalisation,
exactly (an affine map per channel), from the `mean`/`std` in the timm model's pretrained_cfg.
A 1-channel input is replicated to 3 channels first (taken as normalised like the others).
"""
from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputAdapter(nn.Module):
    """ImageNet-normalised B x (1|3) x H x W -> the network's own normalisation, B x 3 x H x W."""

    def __init__(self, model_mean=IMAGENET_MEAN, model_std=IMAGENET_STD):
        super().__init__()
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean_m, std_m = torch.tensor(tuple(model_mean), dtype=torch.float32), torch.tensor(tuple(model_std), dtype=torch.float32)
        # x_model = (x_in * std_in + mean_in - mean_m) / std_m
        scale, shift = std_in / std_m, (mean_in - mean_m) / std_m
        self.identity = bool(torch.allclose(scale, torch.ones(3)) and torch.allclose(shift, torch.zeros(3)))
        self.model_mean, self.model_std = tuple(float(v) for v in mean_m), tuple(float(v) for v in std_m)
        # not persistent: derived from the architecture, not weights (kept out of fingerprints)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    @classmethod
    def for_model(cls, model: nn.Module) -> "InputAdapter":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return cls(cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))

    def forward(self, x: torch.Tensor, who: str = "teacher") -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{who}: expected a B x 3 x H x W (or B x 1 x H x W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if not self.identity:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        return x
