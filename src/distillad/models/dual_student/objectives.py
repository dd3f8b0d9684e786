"""Losses and scores: the decoder student's loose global-cosine loss with hard mining (eq. 1,
Dinomaly), the encoder student's CLS regression (eq. 2), the Noisy-OR fusion and its BCE
objective (section 3.4) and the inference fusion (section 3.5).

Sign convention of the paper: P(x) is the probability that x is NORMAL, and a student's
normal-probability is P_S(x) = 1 - sigmoid(L_S(x)) = sigmoid(-L_S(x)).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

#: Dinomaly's hard mining: easy points keep 10 % of their gradient ...
HM_FACTOR = 0.1
#: ... where "easy" = below the top-(1-p) quantile of point distances, p = min(0.9 it / 1000, 0.9)
HM_P_FINAL = 0.9
HM_RAMP_ITERS = 1000


def hard_mining_p(iteration: int) -> float:
    """p = min(0.9 * it / 1000, 0.9) (METHODS.md, Dinomaly reference)."""
    return min(HM_P_FINAL * iteration / HM_RAMP_ITERS, HM_P_FINAL)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `factor` where `mask` is True."""

    @staticmethod
    def forward(ctx, x, mask, factor):
        ctx.save_for_backward(mask)
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        scale = torch.where(mask, torch.full_like(grad, ctx.factor), torch.ones_like(grad))
        return grad * scale, None, None


def scale_grad(x: torch.Tensor, mask: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` unchanged; its gradient multiplied by `factor` where `mask` (broadcast to x) is True."""
    return _ScaleGrad.apply(x, mask.expand_as(x), float(factor))


def point_distances(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """B x C x h x w maps -> B x h x w: 1 - cosine over channels at every spatial point."""
    return 1.0 - F.cosine_similarity(target, pred, dim=1)


def hard_mining_threshold(dist: torch.Tensor, p: float, gather=None) -> torch.Tensor:
    """The value of the top-(1-p) quantile of the point distances of the (global) batch: the
    k-th largest with k = int(N (1 - p)), N = number of points (at least 1). `gather` (DDP)
    concatenates the distances of every process first, so the threshold is the global one."""
    flat = dist.detach().reshape(-1)
    if gather is not None:
        flat = gather(flat)
    k = max(1, int(flat.numel() * (1.0 - p)))
    return torch.topk(flat, k).values[-1]


def global_cosine_distance(targets: Sequence[torch.Tensor], preds: Sequence[torch.Tensor], *,
                           p: float = 0.0, factor: float = HM_FACTOR, gather=None) -> torch.Tensor:
    """Eq. (1) per image: mean over groups of 1 - cos(vec(F_T^i), vec(F_S^i)) -> [B].

    The teacher side is detached. With p > 0 the gradient reaching the student maps is
    multiplied by `factor` at the "easy" spatial points (point distance below the top-(1-p)
    quantile of the batch), which is Dinomaly's hard mining: it changes only the gradient,
    never the loss value."""
    per_group = []
    for t, s in zip(targets, preds):
        t = t.detach()
        if p > 0:
            with torch.no_grad():
                d = point_distances(t, s)
                thr = hard_mining_threshold(d, p, gather)
                easy = (d < thr).unsqueeze(1)
            s = scale_grad(s, easy, factor)
        per_group.append(1.0 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1))
    return torch.stack(per_group, 0).mean(0)


def cls_distance(target: torch.Tensor, pred: torch.Tensor, splits: Sequence[int], kind: str = "mse",
                 select: Sequence[int] | None = None) -> torch.Tensor:
    """Eq. (2) per image: (1/m) sum_j d(CLS_T^j, CLS_S^j) over the levels j in `select`
    (all by default). Vectors are concatenated per image in `target` / `pred` (B x sum C_j),
    `splits` gives the widths C_j. d = mean squared error over channels ("mse", appendix K
    speaks of the MSE between class tokens) or the plain squared L2 norm ("sse", eq. 2
    literally)."""
    t = torch.split(target.detach(), list(splits), dim=1)
    s = torch.split(pred, list(splits), dim=1)
    idx = range(len(splits)) if select is None else select
    parts = []
    for j in idx:
        sq = (t[j] - s[j]).pow(2)
        parts.append(sq.mean(1) if kind == "mse" else sq.sum(1))
    return torch.stack(parts, 0).mean(0)


def log_sigmoid_prod(l_e: torch.Tensor, l_d: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(L_E) sigmoid(L_D)) = log(1 - P(x)) = log AC(x), computed stably."""
    return F.logsigmoid(l_e) + F.logsigmoid(l_d)


def _log1mexp(s: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(s)) for s <= 0, accurate on both ends (Maechler 2012)."""
    s = s.clamp(max=-1e-30)
    return torch.where(s > -math.log(2.0), torch.log(-torch.expm1(s)), torch.log1p(-torch.exp(s)))


def noisy_or_normal_prob(l_e: torch.Tensor, l_d: torch.Tensor) -> torch.Tensor:
    """Section 3.4: P(x) = 1 - sigmoid(L_SE) sigmoid(L_SD) (probability that x is normal)."""
    return 1.0 - torch.sigmoid(l_e) * torch.sigmoid(l_d)


def noisy_or_bce(l_e: torch.Tensor, l_d: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_total = -(1/n) sum_i [y_i log P(x_i) + (1 - y_i) log(1 - P(x_i))], y = 1 for normal.

    Evaluated in log space: log(1 - P) = logsig(L_E) + logsig(L_D) and log P = log1mexp of it,
    so it neither overflows (exp(L) for large L) nor loses the gradient to rounding."""
    log_ac = log_sigmoid_prod(l_e, l_d)
    log_p = _log1mexp(log_ac)
    y = y.to(log_ac.dtype)
    return -(y * log_p + (1.0 - y) * log_ac).mean()


def single_bce(l: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE with one student: P(x) = 1 - sigmoid(L) (used only with supervised training)."""
    y = y.to(l.dtype)
    return -(y * F.logsigmoid(-l) + (1.0 - y) * F.logsigmoid(l)).mean()
