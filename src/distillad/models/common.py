"""Small pieces several methods share (smoothing, top-k image scores)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    radius = max(1, int(truncate * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B x H x W maps (reflect padding). sigma <= 0: unchanged."""
    if sigma is None or sigma <= 0:
        return maps
    k = gaussian_kernel1d(float(sigma)).to(maps)
    r = len(k) // 2
    x = maps[:, None]
    if min(x.shape[-2:]) <= r:  # reflect padding needs the map to be larger than the radius
        x = F.pad(x, (r, r, r, r), mode="replicate")
    else:
        x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def top_fraction_mean(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the top `fraction` of pixels of each B x H x W map (at least one pixel)."""
    flat = maps.flatten(1)
    k = max(1, int(math.ceil(fraction * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(1)


def count_flops(module: torch.nn.Module, *inputs: torch.Tensor, **kwargs) -> int:
    """FLOPs of one forward of a copy of `module` on meta tensors (no memory, no compute),
    counted by `torch.utils.flop_counter.FlopCounterMode`: matmuls and convolutions,
    1 multiply-add = 2 FLOPs; element-wise work (softmax, norms, activations) is not counted."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(module).to("meta")
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        meta(*[x.to("meta") for x in inputs], **kwargs)
    return int(fc.get_total_flops())
