"""The one interface every frozen feature extractor offers (ViT, CNN, PDN).

Layers are 1-indexed everywhere: for a ViT, layer j is the output of transformer block j; for a
CNN, layer j is the output of feature stage j (timm `features_only` order); for a PDN, layer 1 is
its 384-channel output.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn


@dataclass
class TeacherFeatures:
    """What a teacher returns for the layers asked for.

    maps:    layer -> B x C x h x w (ViT: patch tokens on the patch grid; CNN: stage map)
    globals: layer -> B x C (ViT: the CLS token; CNN / PDN: global average of the map)
    tokens:  layer -> B x (P + N) x C, all tokens with the P prefix tokens first (ViT only,
             filled when `return_tokens=True`)
    """

    maps: dict[int, torch.Tensor] = field(default_factory=dict)
    globals: dict[int, torch.Tensor] = field(default_factory=dict)
    tokens: dict[int, torch.Tensor] = field(default_factory=dict)


class Teacher(nn.Module):
    """Frozen feature extractor. Subclasses set the attributes below and implement `extract`.

    Attributes
    ----------
    name: registry name ("dinov2_vitb14_reg", "tf_efficientnet_lite0", "pdn_s", ...)
    kind: "vit" | "cnn" | "pdn"
    num_layers: how many layers can be asked for (1..num_layers)
    input_multiple: input height/width must be a multiple of this (ViT: patch size)
    num_prefix_tokens: ViT only (CLS + registers + DIST), read from the timm model
    weights_source: a human-readable description of where the weights came from
    """

    name: str = ""
    kind: str = ""
    num_layers: int = 0
    input_multiple: int = 1
    num_prefix_tokens: int = 0
    weights_source: str = "random"
    config: dict = {}  # keyword arguments of `teachers.create` (besides name/weights) that rebuild it

    def channels(self, layer: int) -> int:
        raise NotImplementedError

    def stride(self, layer: int) -> int:
        """Input pixels per map cell at `layer` (ViT: the patch size)."""
        raise NotImplementedError

    def extract(self, x: torch.Tensor, layers: Sequence[int], *, final_norm: bool = False,
                return_tokens: bool = False) -> TeacherFeatures:
        raise NotImplementedError

    def forward(self, x, layers, **kw):  # the teacher is frozen: never build a graph through it
        self.check_layers(layers)
        with torch.no_grad():
            return self.extract(x, layers, **kw)

    def check_layers(self, layers: Sequence[int]) -> None:
        for j in layers:
            if not 1 <= int(j) <= self.num_layers:
                raise ValueError(f"teacher {self.name}: layer {j} out of range 1..{self.num_layers} (layers are 1-indexed)")

    def freeze(self) -> "Teacher":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True):  # frozen teachers stay in eval mode (BatchNorm, dropout)
        return super().train(False)

    def fingerprint(self) -> str:
        """sha256 over parameter/buffer names, shapes and bytes: identifies the exact weights."""
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        self._fingerprint_cache = h.hexdigest()[:16]
        return self._fingerprint_cache

    def spec(self) -> dict:
        """What a saved model records about its teacher."""
        return {"name": self.name, "kind": self.kind, "weights": self.weights_source,
                "fingerprint": self.fingerprint(), "config": dict(self.config),
                "num_parameters": sum(p.numel() for p in self.parameters())}
