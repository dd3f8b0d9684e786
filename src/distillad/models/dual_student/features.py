"""What the students need from the frozen teacher, for a ViT or a CNN teacher.

ViT teacher (the paper's setting, DINOv2-reg ViT-B/14):
- decoder targets: layer groups of raw block outputs (no final norm), each group the mean of
  its blocks over ALL tokens (CLS and registers included: the decoder sees them, the loss and
  maps drop them). Default blocks 3..10 (1-indexed), groups 3-6 and 7-10 (eq. 1, METHODS.md).
- encoder targets: the CLS token after every block j = 1..L, plus the CLS after the final
  LayerNorm ("the final class token", eq. 2): m = L + 1 vectors. The paper does not say
  whether "the final class token" is normalised; we take the normalised output CLS since the
  raw CLS of block L is already among the per-block ones (`encoder_final_norm=False` drops it
  and uses m = L).

CNN teacher (the offline variant; what changes):
- a "layer" is a feature stage (timm features_only order). The stages of a group are resized
  to one common grid (that of the middle selected stage: average pooling for finer stages,
  bilinear for coarser ones) and concatenated over channels (stages have different widths, so
  they cannot be averaged as ViT blocks are). Tokens = grid cells; there are no prefix tokens.
- the bottleneck input is the channel concatenation of all groups; the decoder works at that
  width and each group's prediction is its own channel slice (see `DinomalyDecoder`).
- the "CLS" of stage j is its globally average-pooled vector; m = number of stages and "the
  final class token" is the last stage's pooled vector (there is no final norm).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F


def vit_final_norm(net, cls: torch.Tensor) -> torch.Tensor:
    """Apply the ViT's own final LayerNorm to a (raw, last-block) CLS token. LayerNorm acts per
    token, so this equals taking the CLS of the final-normed token sequence, at no extra pass."""
    from timm.models.vision_transformer import VisionTransformer

    for m in net.modules():
        if isinstance(m, VisionTransformer):
            return m.norm(cls)
    norm = getattr(net, "final_norm_module", None)
    if callable(norm):
        return norm()(cls)
    raise TypeError(f"teacher {getattr(net, 'name', net)}: cannot find its final LayerNorm "
                    "(set encoder_final_norm=False)")


@dataclass
class Layout:
    """Resolved feature layout of one teacher (saved with the model)."""

    kind: str                         # "vit" | "cnn"
    groups: list[list[int]]           # teacher layers (1-indexed) per decoder group
    group_dims: list[int]             # channels per group
    prefix: int = 0                   # ViT prefix tokens (CLS + registers)
    cls_levels: list[int] = field(default_factory=list)  # layers whose global vector is a target
    cls_final_norm: bool = False      # ViT: + the final-normed CLS
    cls_splits: list[int] = field(default_factory=list)  # widths of the concatenated targets
    grid_layer: int = 0               # CNN: the stage whose grid the groups are resized to

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(**d)

    @property
    def decoder_layers(self) -> list[int]:
        return [j for g in self.groups for j in g]


def default_layers(teacher) -> list[int]:
    """ViT: the 8 middle blocks 3..10 of a 12-block model (scaled as range(3, L-1) for other
    depths: drop the first two and the last two). CNN: the middle stages 2..L-1."""
    L = teacher.num_layers
    if teacher.kind == "vit":
        return list(range(3, L - 1)) if L >= 5 else list(range(1, L + 1))
    return list(range(2, L)) if L >= 3 else list(range(1, L + 1))


def make_layout(teacher, layers: Sequence[int] | None, num_groups: int, encoder: bool,
                final_norm: bool) -> Layout:
    from .nn import split_evenly

    if teacher.kind not in ("vit", "cnn"):
        raise ValueError(f"dual_student needs a ViT or CNN teacher, not {teacher.kind!r} ({teacher.name})")
    layers = [int(j) for j in (layers if layers else default_layers(teacher))]
    teacher.check_layers(layers)
    if len(layers) < num_groups:
        raise ValueError(f"{len(layers)} layers cannot form {num_groups} groups")
    groups = [[layers[i] for i in chunk] for chunk in split_evenly(len(layers), num_groups)]
    L = teacher.num_layers
    if teacher.kind == "vit":
        dims = [teacher.channels(g[0]) for g in groups]
        lay = Layout("vit", groups, dims, prefix=int(teacher.num_prefix_tokens))
    else:
        dims = [sum(teacher.channels(j) for j in g) for g in groups]
        lay = Layout("cnn", groups, dims, grid_layer=layers[len(layers) // 2])
    if encoder:
        lay.cls_levels = list(range(1, L + 1))
        lay.cls_final_norm = bool(final_norm and teacher.kind == "vit")
        lay.cls_splits = [teacher.channels(j) for j in lay.cls_levels] + \
            ([teacher.channels(L)] if lay.cls_final_norm else [])
    return lay


def teacher_features(teacher, lay: Layout, x: torch.Tensor, *, groups: bool = True,
                     cls: bool = True) -> dict:
    """{"groups": [B x T x C_g], "cls": B x sum(cls_splits), "grid": (h, w)} for a batch."""
    need = set()
    if groups:
        need |= set(lay.decoder_layers)
        if lay.kind == "cnn":
            need.add(lay.grid_layer)
    if cls and lay.cls_levels:
        need |= set(lay.cls_levels)
    need = sorted(need)
    out: dict = {}
    with torch.no_grad():
        f = teacher(x, need, final_norm=False, return_tokens=(lay.kind == "vit" and groups))
        if groups:
            if lay.kind == "vit":
                out["groups"] = [torch.stack([f.tokens[j] for j in g]).mean(0) for g in lay.groups]
                h, w = f.maps[lay.groups[0][0]].shape[-2:]
            else:
                h, w = f.maps[lay.grid_layer].shape[-2:]
                out["groups"] = [torch.cat([_to_grid(f.maps[j], (h, w)) for j in g], 1).flatten(2).transpose(1, 2)
                                 for g in lay.groups]
            out["grid"] = (int(h), int(w))
        if cls and lay.cls_levels:
            vecs = [f.globals[j] for j in lay.cls_levels]
            if lay.cls_final_norm:
                vecs.append(vit_final_norm(teacher, f.globals[lay.cls_levels[-1]]))
            out["cls"] = torch.cat(vecs, 1)
    return out


def _to_grid(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(m.shape[-2:]) == tuple(hw):
        return m
    if m.shape[-2] >= hw[0] and m.shape[-1] >= hw[1]:
        return F.adaptive_avg_pool2d(m, hw)
    return F.interpolate(m, size=hw, mode="bilinear", align_corners=False)


def tokens_to_map(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """B x (P + h w) x C -> B x C x h x w (prefix tokens dropped)."""
    t = tokens[:, prefix:]
    b, n, c = t.shape
    return t.transpose(1, 2).reshape(b, c, grid[0], grid[1])
