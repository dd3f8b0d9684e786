"""dual_student (paper 003/001) and dinomaly (its encoder-decoder student alone).

See `detector.py` for the method, the section each part follows and the choices the paper
leaves open."""
from .detector import Dinomaly, DualStudent
from .features import Layout, make_layout, teacher_features
from .nn import DinomalyDecoder, EncoderStudent, LinearAttention, NoisyBottleneck
from .objectives import (global_cosine_distance, hard_mining_p, noisy_or_bce, noisy_or_normal_prob,
                         scale_grad)
from .optim import StableAdamW, warm_cosine_lr

__all__ = ["DualStudent", "Dinomaly", "Layout", "make_layout", "teacher_features", "DinomalyDecoder",
           "EncoderStudent", "LinearAttention", "NoisyBottleneck", "global_cosine_distance", "hard_mining_p",
           "noisy_or_bce", "noisy_or_normal_prob", "scale_grad", "StableAdamW", "warm_cosine_lr"]
