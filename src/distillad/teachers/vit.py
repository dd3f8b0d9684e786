"""ViT teachers (timm): patch tokens of any block as B x C x h x w maps, the CLS token, all tokens.

Layer j (1-indexed) is the output of transformer block j. With `final_norm=True` the model's
final LayerNorm is applied to that output (l2bt applies it, Dinomaly does not: METHODS.md).
The prefix tokens (CLS, registers, DeiT's distillation token) come first in the token sequence;
how many there are is read from the timm model (`num_prefix_tokens`), never assumed: 1 for
DINOv2 and ViT-B/16, 5 for DINOv2 with 4 registers, 2 for DeiT distilled.

Any input whose sides are multiples of the patch size works: the models are built with
`dynamic_img_size=True`, so timm interpolates the positional embeddings from the model's grid
(`img_size`, default the checkpoint's native size: 518 for DINOv2, 224 otherwise) to the
input's grid at every forward, as DINOv2 itself does. timm interpolates bicubically with
antialiasing and no offset, which is what Meta's register models do; Meta's hub models without
registers use no antialiasing and a 0.1 offset, so at input sizes other than 518 features of
`dinov2_vits14` / `dinov2_vitb14` can differ slightly from Meta's own code.
A forward stops after the deepest block asked for.

Input: ImageNet-normalised like for every teacher; the teacher converts it to the statistics the
network was trained with (ImageNet for DINOv2 and DeiT, mean = std = 0.5 for timm's
`vit_base_patch16_224`), see `inputs.py`. A 1-channel input is replicated to 3 channels.

Weights: Meta's original `.pth` (keys `blocks.0.attn.qkv.weight`, `register_tokens`,
`mask_token`, ...), DeiT's release files (`{"model": ...}`) and timm files all load, through
timm's `vision_transformer.checkpoint_filter_fn` (`weights.load_into`). Google's `.npz` ViT
files are not read: convert them with timm first.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Teacher, TeacherFeatures
from .build import TIMM_NAMES, create_timm
from .inputs import InputAdapter


class ViTTeacher(Teacher):
    kind = "vit"

    def __init__(self, name: str, model: nn.Module, *, weights_source: str, config: dict):
        super().__init__()
        self.name = name
        self.model = model
        self.weights_source = weights_source
        self.config = dict(config)
        ph, pw = model.patch_embed.patch_size
        if ph != pw:
            raise ValueError(f"{name}: non-square patches {ph}x{pw} are not supported")
        self.patch_size = ph
        self.input_multiple = ph
        self.num_layers = len(model.blocks)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.num_register_tokens = int(getattr(model, "num_reg_tokens", 0))
        self.embed_dim = int(model.embed_dim)
        self.input_adapter = InputAdapter.for_model(model)
        self.freeze()

    def channels(self, layer: int) -> int:
        self.check_layers([layer])
        return self.embed_dim

    def stride(self, layer: int) -> int:
        self.check_layers([layer])
        return self.patch_size

    @torch.no_grad()
    def extract(self, x: torch.Tensor, layers: Sequence[int], *, final_norm: bool = False,
                return_tokens: bool = False) -> TeacherFeatures:
        x = self.input_adapter(x, self.name)
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"teacher {self.name}: input {H}x{W} is not a multiple of the patch size {p}")
        want = sorted({int(j) for j in layers})
        if not want:
            return TeacherFeatures()
        outs = self.model.forward_intermediates(
            x, indices=[j - 1 for j in want], norm=final_norm, stop_early=True, output_fmt="NLC",
            intermediates_only=True, return_prefix_tokens=True)
        h, w = H // p, W // p
        feats = TeacherFeatures()
        for j, out in zip(want, outs):
            patches, prefix = out if self.num_prefix_tokens else (out, None)
            B, N, C = patches.shape
            feats.maps[j] = patches.transpose(1, 2).reshape(B, C, h, w).contiguous()
            if prefix is not None:
                feats.globals[j] = prefix[:, 0]
            if return_tokens:
                feats.tokens[j] = patches if prefix is None else torch.cat([prefix, patches], dim=1)
        return feats


def _timm_vit_builder(name: str):
    def build(weights=None, *, img_size: int | None = None, seed: int = 0, **arch) -> ViTTeacher:
        """arch: timm architecture overrides (e.g. depth=2 for fast tests); recorded in config."""
        kwargs = dict(arch, dynamic_img_size=True)
        if img_size is not None:
            kwargs["img_size"] = img_size
        model, source = create_timm(name, weights, seed=seed, keep_head=False, **kwargs)
        config = dict(arch, img_size=_img_size(model))
        if source == "random":
            config["seed"] = seed
        return ViTTeacher(name, model, weights_source=source, config=config)
    return build


def _img_size(model: nn.Module):
    h, w = model.patch_embed.img_size
    return h if h == w else [h, w]


def build_test_vit_tiny(weights=None, *, img_size: int = 56, seed: int = 0) -> ViTTeacher:
    """A DINOv2-reg-like timm ViT small enough for unit tests: patch 14, dim 32, depth 4,
    2 heads, 1 register token, LayerScale, positional embeddings not covering the prefix."""
    from timm.models.vision_transformer import VisionTransformer

    from . import weights as W

    found = W.resolve("test_vit_tiny", weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(img_size=img_size, patch_size=14, embed_dim=32, depth=4, num_heads=2,
                                  reg_tokens=1, no_embed_class=True, init_values=1e-5, num_classes=0,
                                  dynamic_img_size=True)
    config = {"img_size": img_size}
    source = W.load_or_random(model, found, seed, config)
    return ViTTeacher("test_vit_tiny", model.eval(), weights_source=source, config=config)


_DESCRIPTIONS = {
    "dinov2_vits14": "DINOv2 ViT-S/14 (LVD-142M), 384-d, 12 blocks, CLS",
    "dinov2_vitb14": "DINOv2 ViT-B/14 (LVD-142M), 768-d, 12 blocks, CLS",
    "dinov2_vits14_reg": "DINOv2 ViT-S/14 with 4 registers, 384-d, 12 blocks, CLS + 4 registers",
    "dinov2_vitb14_reg": "DINOv2 ViT-B/14 with 4 registers, 768-d, 12 blocks, CLS + 4 registers (l2bt / dual_student default)",
    "deit_base_distilled_patch16_224": "DeiT-B distilled, 768-d, 12 blocks, CLS + DIST token (OneN)",
    "vit_base_patch16_224": "ViT-B/16 (timm augreg), 768-d, 12 blocks, CLS",
}

#: (registry name, builder, kind, description), registered by `registry`
TEACHERS = [(n, _timm_vit_builder(n), "vit", f"{d} [timm {TIMM_NAMES.get(n, n)}]") for n, d in _DESCRIPTIONS.items()]
TEACHERS.append(("test_vit_tiny", build_test_vit_tiny, "vit",
                 "tiny random ViT for unit tests (patch 14, dim 32, depth 4, 1 register); weights='random'"))
