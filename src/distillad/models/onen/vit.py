"""The OneN student: a DeiT-style ViT with CLS and distillation tokens that returns its attention
probabilities (paper section 3, "Student Network"; DeiT, Touvron et al. 2021).

Token layout: [CLS, DIST, patch_1 .. patch_N]; the positional embedding has N + 2 entries; one
linear head on CLS and a separate head on DIST (METHODS.md). `forward` returns both logits and
the softmax attention of every block (B x heads x T x T); at inference the two logits are
averaged (DeiT). Without the distillation token (`distill_token=False`) the same module is a plain
ViT (the "ViT-B-16 (S/B/L)" baselines of tables 5-14).

Written here (not timm's `VisionTransformerDistilled`) because rollout and the progressive masked
focal loss need the attention probabilities with gradients, and timm's fused attention does not
expose them; parameter names follow timm's so DeiT/ViT checkpoints load (`load_pretrained`).

Variants (section 4, "Baselines"): S, B, L = 3, 8 and 12 transformer layers of DeiT-B
(768 dims, 12 heads, patch 16). Width, heads and patch size are options for small runs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Mlp, PatchEmbed, resample_abs_pos_embed, trunc_normal_

from ...errors import ModelFileError

log = logging.getLogger(__name__)

VARIANT_DEPTH = {"S": 3, "B": 8, "L": 12}


class Attention(nn.Module):
    """Multi-head self-attention (eqs. 1-2) that also returns the attention matrix A."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # B x h x T x T
        out = (attn @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(out), attn


class Block(nn.Module):
    """Pre-norm transformer block (timm parameter names: norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x):
        y, attn = self.attn(self.norm1(x))
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, attn


class DistilledViT(nn.Module):
    """DeiT-style ViT. `forward(x)` -> (cls_logits, dist_logits or None, [attention per block])."""

    def __init__(self, num_classes: int, *, depth: int = 3, img_size: int = 224, patch_size: int = 16,
                 embed_dim: int = 768, num_heads: int = 12, distill_token: bool = True):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image_size {img_size} is not a multiple of patch_size {patch_size}")
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.num_prefix_tokens = 2 if distill_token else 1
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distill_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + self.num_prefix_tokens, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.head_dist = nn.Linear(embed_dim, num_classes) if distill_token else None
        # DeiT / timm initialisation
        for p in (self.cls_token, self.pos_embed) + ((self.dist_token,) if distill_token else ()):
            trunc_normal_(p, std=0.02)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor):
        B = x.shape[0]
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(B, -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(B, -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        attns = []
        for blk in self.blocks:
            x, a = blk(x)
            attns.append(a)
        x = self.norm(x)
        cls_logits = self.head(x[:, 0])
        dist_logits = self.head_dist(x[:, 1]) if self.head_dist is not None else None
        return cls_logits, dist_logits, attns

    @staticmethod
    def inference_logits(cls_logits, dist_logits):
        """DeiT inference: the average of the CLS and DIST heads (CLS alone without DIST token)."""
        return cls_logits if dist_logits is None else (cls_logits + dist_logits) / 2

    def load_pretrained(self, path: str | os.PathLike) -> list[str]:
        """Initialise from a local timm DeiT / ViT state dict (.safetensors, .pth or .bin).

        Blocks beyond this model's depth are ignored (S/B/L keep the first 3/8/12 blocks, as
        the paper's truncated ViT-B-16); the positional embedding is resampled to this grid; a
        ViT checkpoint without distillation token gets DIST (and its position) from CLS; the
        class heads are never loaded (class counts differ). Returns the keys left at random init.
        """
        path = Path(path)
        if not path.exists():
            raise ModelFileError(f"{path}: student checkpoint not found")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                sd = load_file(str(path))
            else:
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch / safetensors raise several types
            raise ModelFileError(f"{path}: cannot read the student checkpoint ({e})") from None
        for key in ("model", "state_dict"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
        if "pos_embed" not in sd or "patch_embed.proj.weight" not in sd:
            raise ModelFileError(f"{path}: not a ViT/DeiT state dict (no pos_embed / patch_embed)")
        sd = {k: v for k, v in sd.items() if not k.startswith(("head", "fc_norm"))}
        ck_prefix = 2 if "dist_token" in sd else 1
        pos = sd["pos_embed"]
        pre, grid_tokens = pos[:, :ck_prefix], pos[:, ck_prefix:]
        if self.dist_token is not None and ck_prefix == 1:
            sd["dist_token"] = sd["cls_token"].clone()
            pre = torch.cat([pre, pre[:, :1]], dim=1)
        elif self.dist_token is None and ck_prefix == 2:
            sd.pop("dist_token", None)
            pre = pre[:, :1]
        sd["pos_embed"] = torch.cat([pre, resample_abs_pos_embed(grid_tokens, (self.grid, self.grid),
                                                                 num_prefix_tokens=0)], dim=1)
        w = sd["patch_embed.proj.weight"]
        if w.shape[-1] != self.patch_size:
            sd["patch_embed.proj.weight"] = F.interpolate(w, size=(self.patch_size,) * 2, mode="bicubic",
                                                          align_corners=False)
        own = self.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}
        bad = [k for k, v in sd.items() if v.shape != own[k].shape]
        if bad:
            raise ModelFileError(f"{path}: checkpoint shapes do not fit this student ({bad[0]}: "
                                 f"{tuple(sd[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}); check embed_dim / num_heads")
        missing = sorted(set(own) - set(sd))
        self.load_state_dict(sd, strict=False)
        log.info("student initialised from %s (%d tensors at random init: %s)", path, len(missing), missing)
        return missing


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
