"""Progressive masked focal loss (PMFL), paper section 3, eqs. 4-8.

For attention map i = 1..N_a (one per transformer layer), a Bernoulli retention mask with
p_i = p_min + (p_max - p_min) * i / N_a (eq. 5) keeps a growing share of the attention values in
deeper layers; the focal loss (eq. 4, alpha_t = 1, gamma = 2) between the retained attention
values and the retained target mask is averaged over the layers (eq. 7) and weighted by beta = 7
in the student loss (eq. 8).

Left open by the paper, decided here (documented in docs/onen.md):
- "Attention map i" is the CLS row of layer i over the patch columns (B x N), heads fused by
  max (the fusion the rollout uses, so the supervised quantity is the localised one).
- The focal loss is binary: p = the raw attention probability (in [0, 1]; the rest of the CLS
  row's mass may go to CLS / DIST, so an all-normal target is reachable), target = 1 on patches
  that contain any annotated pixel. eq. 4 with alpha_t = alpha for target 1 and 1 for target 0
  (alpha_t = 1 makes both the same).
- "Removed" elements (eq. 6) are excluded from the mean, not only multiplied by zero.
- eq. 5 is taken literally: layer 1 keeps p_min + (p_max - p_min) / N_a, layer N_a keeps p_max.
- Samples without any target (a defective image with no mask or box) do not enter the loss;
  normal images enter with an all-zero target.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .rollout import fuse_heads


def retention_probabilities(num_maps: int, p_min: float = 0.1, p_max: float = 1.0) -> list[float]:
    """eq. 5: p_i = p_min + (p_max - p_min) * i / N_a, i = 1..N_a."""
    if not (0.0 <= p_min <= 1.0 and 0.0 <= p_max <= 1.0):
        raise ValueError(f"p_min and p_max must lie in [0, 1], got {p_min}, {p_max}")
    return [p_min + (p_max - p_min) * i / num_maps for i in range(1, num_maps + 1)]


def retention_masks(shape, num_maps: int, p_min: float = 0.1, p_max: float = 1.0, *,
                    generator: torch.Generator | None = None, device=None) -> list[torch.Tensor]:
    """eqs. 5-6: one Bernoulli(p_i) keep-mask of `shape` (B x N) per attention map i."""
    return [torch.rand(shape, generator=generator, device=device) < p
            for p in retention_probabilities(num_maps, p_min, p_max)]


def focal_loss(p: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, gamma: float = 2.0,
               eps: float = 1e-6) -> torch.Tensor:
    """eq. 4 elementwise: -alpha_t (1 - p_t)^gamma log(p_t), p_t = p where target = 1 else 1 - p."""
    p = p.clamp(eps, 1.0 - eps)
    pt = torch.where(target > 0.5, p, 1.0 - p)
    at = torch.where(target > 0.5, torch.full_like(p, alpha), torch.ones_like(p))
    return -at * (1.0 - pt).pow(gamma) * torch.log(pt)


def patch_targets(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """B x H x W {0,1} masks -> B x grid*grid; a patch is defective if any of its pixels is
    (max pooling: small defects are not lost by the down-sampling of section 3)."""
    return F.adaptive_max_pool2d(masks[:, None].float(), grid).flatten(1)


def pmfl_loss(attns: Sequence[torch.Tensor], targets: torch.Tensor, *, num_prefix_tokens: int,
              p_min: float = 0.1, p_max: float = 1.0, alpha: float = 1.0, gamma: float = 2.0,
              head_fusion: str = "max", generator: torch.Generator | None = None,
              progressive: bool = True) -> torch.Tensor:
    """eq. 7. attns: per layer B x heads x T x T (with grad); targets: B x N patch targets of the
    samples that have one (rows of samples without a target must be removed by the caller).
    `progressive=False` keeps every value in every layer (the ablation of table 15)."""
    n = len(attns)
    keeps = retention_masks(targets.shape, n, p_min if progressive else 1.0, p_max if progressive else 1.0,
                            generator=generator, device=targets.device)
    total = targets.new_zeros(())
    for a, keep in zip(attns, keeps):
        cls_row = fuse_heads(a, head_fusion)[:, 0, num_prefix_tokens:]
        if keep.sum() == 0:
            continue
        total = total + focal_loss(cls_row[keep], targets[keep], alpha=alpha, gamma=gamma).mean()
    return total / n
