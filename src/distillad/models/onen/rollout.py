"""Attention rollout (Abnar & Zuidema 2020) as OneN uses it (paper section 3 "Student Network"
and section 4 "Implementation Details"; METHODS.md).

Per layer l: fuse the heads (max for OneN), zero the lowest `discard_ratio` (75 %) of the fused
values, mix with the identity  A~ = alpha A + (1 - alpha) I  (alpha_roll = 0.5), renormalise
every row to sum 1 (keepdim: a popular implementation divides without keepdim, which divides
column j by the sum of row j instead of row i by its own sum), and multiply the layers.

Left open by the paper, decided here:
- Product order: the paper writes A~(1) x ... x A~(L); rollout as defined by Abnar & Zuidema
  (and the reference implementation) accumulates later layers on the left,
  R = A~(L) ... A~(1), so that row i of R is the flow from the input tokens to output token i.
  We follow Abnar & Zuidema.
- Discarding is per image over the whole fused (T x T) matrix; the CLS -> CLS entry is never
  discarded (as in the reference implementation).
- The map is the CLS row over the patch columns (the DIST column and the CLS column excluded),
  reshaped to the patch grid. Its raw values (attention mass, comparable across images) give the
  image score (max of the map); `normalize="max"` divides each map by its own maximum for display
  (METHODS.md "normalised").
"""
from __future__ import annotations

from typing import Sequence

import torch


def fuse_heads(attn: torch.Tensor, how: str = "max") -> torch.Tensor:
    """B x heads x T x T -> B x T x T."""
    if how == "max":
        return attn.amax(dim=1)
    if how == "mean":
        return attn.mean(dim=1)
    if how == "min":
        return attn.amin(dim=1)
    raise ValueError(f"unknown head fusion {how!r} (max, mean, min)")


def attention_rollout(attns: Sequence[torch.Tensor], *, num_prefix_tokens: int, alpha: float = 0.5,
                      discard_ratio: float = 0.75, head_fusion: str = "max") -> torch.Tensor:
    """Rollout of per-layer attentions (each B x heads x T x T) -> CLS-row map B x N (patches).

    `num_prefix_tokens` = 2 with CLS + DIST (the map skips both columns), 1 for a plain ViT.
    """
    if not attns:
        raise ValueError("attention_rollout needs at least one attention map")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    B, _, T, _ = attns[0].shape
    eye = torch.eye(T, dtype=attns[0].dtype, device=attns[0].device)
    result = eye.expand(B, T, T).clone()
    for a in attns:
        fused = fuse_heads(a.detach(), head_fusion)
        if discard_ratio > 0:
            flat = fused.reshape(B, -1).clone()
            k = int(flat.shape[1] * discard_ratio)
            if k > 0:
                low = flat.topk(k, dim=-1, largest=False).indices
                keep_cls = flat[:, :1].clone()
                flat.scatter_(1, low, 0.0)
                flat[:, :1] = keep_cls          # never discard CLS -> CLS
            fused = flat.reshape(B, T, T)
        mixed = alpha * fused + (1.0 - alpha) * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result
    return result[:, 0, num_prefix_tokens:]


def rollout_maps(attns: Sequence[torch.Tensor], grid: int, *, num_prefix_tokens: int, alpha: float = 0.5,
                 discard_ratio: float = 0.75, head_fusion: str = "max") -> torch.Tensor:
    """Rollout reshaped to the patch grid: B x grid x grid (raw values, not normalised)."""
    m = attention_rollout(attns, num_prefix_tokens=num_prefix_tokens, alpha=alpha,
                          discard_ratio=discard_ratio, head_fusion=head_fusion)
    return m.reshape(m.shape[0], grid, grid)


def normalize_maps(maps: torch.Tensor, how: str = "max") -> torch.Tensor:
    """"max": each map divided by its own maximum (display / reference behaviour); "none": raw."""
    if how == "none":
        return maps
    if how == "max":
        return maps / maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    raise ValueError(f"unknown map normalisation {how!r} (max, none)")
