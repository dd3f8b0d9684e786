"""The two students' networks (paper sections 3.2 and 3.3).

- `NoisyBottleneck`, `LinearAttention`, `DecoderBlock`, `DinomalyDecoder`: the encoder-decoder
  student (section 3.2, "Dinomaly [18] is adopted"), with the reference details listed in
  docs/METHODS.md (bottleneck MLP with dropout, 8 linear-attention ViT blocks, LayerNorm eps
  1e-8, MLP ratio 4, qkv bias, truncated-normal init std 0.01 in +-0.03, zero biases).
- `EncoderStudent`: the encoder-encoder student (section 3.3), a network of the teacher's
  architecture built from scratch (random init) that outputs one global vector per level.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _init_dinomaly(m: nn.Module) -> None:
    """Reference init: Linear weights trunc-normal(std 0.01, +-0.03), biases 0; LayerNorm 1/0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.01, a=-0.03, b=0.03)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class NoisyBottleneck(nn.Module):
    """Dropout(p) -> Linear(d, 4d) -> GELU -> Dropout(p) -> Linear(4d, d) -> Dropout(p).

    Dinomaly's "noisy bottleneck": dropout on the fused teacher tokens acts as feature noise so
    the decoder cannot learn an identity mapping (p = 0.2; 0.4 for very large sets such as
    Real-IAD, appendix D)."""

    def __init__(self, dim: int, dropout: float = 0.2, ratio: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, ratio * dim), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class LinearAttention(nn.Module):
    """Softmax-free linear attention: q, k = elu(.) + 1; out_i = q_i (k^T v) / (q_i . sum_j k_j).

    Dinomaly uses it on purpose: it cannot focus sharply on one token, so it is poor at copying
    the input (the "identical shortcut"), which is what an anomaly-reconstruction decoder wants."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)  # each b h n d
        q = F.elu(q) + 1.0
        k = F.elu(k) + 1.0
        kv = torch.einsum("bhnd,bhne->bhde", k, v)
        z = 1.0 / torch.einsum("bhnd,bhd->bhn", q, k.sum(dim=2))
        out = torch.einsum("bhnd,bhde,bhn->bhne", q, kv, z)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DecoderBlock(nn.Module):
    """Pre-norm ViT block with linear attention: x + attn(LN(x)); x + MLP(LN(x)); no layer scale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-8)
        self.attn = LinearAttention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-8)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def split_evenly(n: int, parts: int) -> list[list[int]]:
    """[0..n) cut into `parts` contiguous chunks as equal as possible (earlier chunks larger)."""
    return [list(map(int, c)) for c in np.array_split(np.arange(n), parts)]


class DinomalyDecoder(nn.Module):
    """Bottleneck + decoder blocks; reconstructs the teacher's layer groups.

    Input: one token tensor per teacher layer group (B x T x C_g, the mean of the group's layers
    for a ViT, prefix tokens included). The bottleneck sees the fusion of all groups: for a ViT
    (`fuse="mean"`) the mean over all the teacher layers (= the group means weighted by group
    size); for a CNN teacher (`fuse="concat"`) the channel concatenation of the group maps.
    Output: one prediction per group. The decoder outputs are reversed (the deepest decoder
    block pairs with the shallowest teacher group, as in Dinomaly) and split into as many
    contiguous chunks as there are groups; each chunk is averaged. With `fuse="concat"` each
    group's prediction is its own channel slice of the (shared-width) decoder output.
    """

    def __init__(self, group_dims: Sequence[int], group_sizes: Sequence[int], depth: int = 8,
                 num_heads: int = 12, dropout: float = 0.2, fuse: str = "mean"):
        super().__init__()
        if fuse not in ("mean", "concat"):
            raise ValueError(f"fuse must be 'mean' or 'concat', not {fuse!r}")
        if depth < len(group_dims):
            raise ValueError(f"decoder depth {depth} < number of groups {len(group_dims)}")
        self.fuse = fuse
        self.group_dims = [int(c) for c in group_dims]
        self.group_sizes = [int(s) for s in group_sizes]
        if fuse == "mean" and len(set(self.group_dims)) != 1:
            raise ValueError("fuse='mean' needs groups of equal width")
        dim = self.group_dims[0] if fuse == "mean" else sum(self.group_dims)
        self.dim = dim
        self.bottleneck = NoisyBottleneck(dim, dropout)
        self.blocks = nn.ModuleList(DecoderBlock(dim, num_heads) for _ in range(depth))
        self.chunks = split_evenly(depth, len(group_dims))
        self.apply(_init_dinomaly)

    def fuse_inputs(self, groups: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.fuse == "concat":
            return torch.cat(list(groups), dim=-1)
        w = torch.tensor(self.group_sizes, dtype=groups[0].dtype, device=groups[0].device)
        return (torch.stack(list(groups)) * (w / w.sum()).view(-1, 1, 1, 1)).sum(0)

    def forward(self, groups: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x = self.bottleneck(self.fuse_inputs(groups))
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        outs = outs[::-1]
        preds = [torch.stack([outs[i] for i in chunk]).mean(0) for chunk in self.chunks]
        if self.fuse == "concat":
            bounds = np.cumsum([0] + self.group_dims)
            preds = [p[..., bounds[g]:bounds[g + 1]] for g, p in enumerate(preds)]
        return preds


class EncoderStudent(nn.Module):
    """A network of the teacher's architecture, randomly initialised, trained from scratch.

    Wraps a `Teacher` object built with `weights="random"` (so its layer semantics are exactly
    the teacher's) and makes it trainable: parameters require grad and `train()` really
    switches BatchNorm / dropout (a `Teacher` otherwise stays in eval mode).
    `forward(x)` returns the concatenation of its global vectors, in the order of
    `levels`: the CLS token after every block, then (ViT, `final_norm=True`) the CLS after the
    final LayerNorm; for a CNN, each stage's globally pooled vector.
    """

    def __init__(self, net, levels: Sequence[int], final_norm: bool):
        super().__init__()
        self.net = net
        self.levels = [int(j) for j in levels]
        self.final_norm = bool(final_norm)
        for p in self.net.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True):
        self.training = mode
        for m in self.net.modules():
            if m is not self.net:
                m.training = mode
        return self

    def forward(self, x):
        # The Teacher's own `extract` runs under no_grad (teachers are frozen), so the student
        # calls the wrapped timm model directly, the same way the teacher classes do.
        net = self.net
        x = net.input_adapter(x, "encoder student")
        idx = [j - 1 for j in self.levels]
        if net.kind == "vit":
            outs = net.model.forward_intermediates(x, indices=idx, norm=False, stop_early=True, output_fmt="NLC",
                                                   intermediates_only=True, return_prefix_tokens=True)
            vecs = [prefix[:, 0] for _, prefix in outs]
            if self.final_norm:
                vecs.append(net.model.norm(vecs[-1]))
        else:
            outs = net.model.forward_intermediates(x, indices=idx, stop_early=True, intermediates_only=True)
            vecs = [m.mean(dim=(2, 3)) for m in outs]
        return torch.cat(vecs, dim=1)
