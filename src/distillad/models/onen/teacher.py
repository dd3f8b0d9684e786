"""The OneN teacher: a CNN classifier over N_def + 1 classes trained with cross-entropy (paper
section 3, "Teacher Network"), with the optional Mask-CNN late-fusion branch (section 3 and
section 4 "Implementation Details": three conv layers 32 -> 64 -> 128, each with BatchNorm, ReLU
and MaxPool, adaptive average pooling to 128 features, concatenated with the image features
before one fully connected classification layer).

The paper's teacher is RegNetY-16GF (ImageNet-1k); the offline default here is EfficientNet-Lite2,
the one ImageNet CNN with weights on this machine (`distillad.teachers.build_timm`).
Left open: the Mask-CNN's kernel size (3, padding 1) and pooling (2 x 2, stride 2); the mask is
fed at the image's input resolution as one channel in {0, 1}.
"""
from __future__ import annotations

import torch
from torch import nn


class MaskCNN(nn.Module):
    def __init__(self, out_features: int = 128):
        super().__init__()
        layers, c_in = [], 1
        for c in (32, 64, out_features):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.features(mask)


class CNNTeacher(nn.Module):
    """timm CNN classifier; with `mask_branch`, logits = fc([pooled image features, MaskCNN(mask)])."""

    def __init__(self, backbone: nn.Module, num_classes: int, mask_branch: bool = False):
        super().__init__()
        self.backbone = backbone
        self.mask_branch = MaskCNN() if mask_branch else None
        self.fc = nn.Linear(backbone.num_features + 128, num_classes) if mask_branch else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.mask_branch is None:
            return self.backbone(x)
        feats = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        if mask is None:
            mask = x.new_zeros(x.shape[0], 1, *x.shape[-2:])
        return self.fc(torch.cat([feats, self.mask_branch(mask)], dim=1))


def build_teacher(name: str, weights, num_classes: int, mask_branch: bool) -> CNNTeacher:
    """`name`: a timm CNN name; `weights`: None (offline default), "random" or a local file."""
    from ...teachers import build_timm
    return CNNTeacher(build_timm(name, weights=weights, num_classes=num_classes), num_classes, mask_branch)
