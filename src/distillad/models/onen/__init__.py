"""OneN (paper 000_70cee693b92826bd.txt) and the baselines it is compared with.

Registered models: `onen` (OneN-S/B/L, `variant=`), `vit_rollout` (plain ViT + rollout) and
`cnn_cam` (CNN classifier + Grad-CAM / Grad-CAM++ / Score-CAM / LayerCAM).
Data-side helpers: `input_setting` (table 1), `weak_boxes`, `synthesize_background`.
"""
from .background import synthesize_background
from .baselines import CNNCam
from .data import INPUT_SETTINGS, Augment, input_setting, mask_to_boxes, weak_boxes
from .detector import OneN, ViTRollout
from .pmfl import focal_loss, pmfl_loss, retention_probabilities
from .rollout import attention_rollout, rollout_maps
from .vit import DistilledViT

__all__ = ["OneN", "ViTRollout", "CNNCam", "DistilledViT", "INPUT_SETTINGS", "Augment", "input_setting",
           "weak_boxes", "mask_to_boxes", "synthesize_background", "attention_rollout", "rollout_maps",
           "pmfl_loss", "focal_loss", "retention_probabilities"]
