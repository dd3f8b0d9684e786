"""StableAdamW with AMSGrad, and the warm-up + cosine learning-rate schedule (appendix D;
Dinomaly reference values in docs/METHODS.md).

No package installed here provides StableAdamW with AMSGrad (torch.optim.AdamW has no update
clipping), so it is written out below following Wortsman et al., "Stable and low-precision
training for large-scale vision-language models" (NeurIPS 2023, [60] in the paper), Algorithm 2
(AdamW with the AdaFactor-style update clipping), combined with AMSGrad (Reddi et al., [61]).
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class StableAdamW(Optimizer):
    """AdamW whose step size is divided, per tensor, by max(1, RMS_t), where

        RMS_t = sqrt(mean(g_t^2 / max(v_hat_t, eps^2)))

    is the root-mean-square of the ratio between the current squared gradient and its running
    estimate (v_hat: bias-corrected second moment). When a gradient is much larger than the
    history says (RMS_t > 1), the step shrinks accordingly, so one outlier gradient cannot
    throw the weights far ("update clipping"). Weight decay is decoupled and uses the clipped
    step size, as in the algorithm. With `amsgrad=True` the denominator uses the running
    maximum of v (AMSGrad, computed as torch.optim.AdamW does). `clip=False` gives exactly
    torch.optim.AdamW(amsgrad=...).
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-10, weight_decay=1e-4,
                 amsgrad=True, clip=True):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError("StableAdamW: invalid hyper-parameters")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, clip=clip))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr, wd = group["eps"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("StableAdamW does not support sparse gradients")
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bc1 = 1 - beta1 ** t
                bc2 = 1 - beta2 ** t
                if group["amsgrad"]:  # as torch.optim.AdamW: running max of the raw v
                    torch.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
                    denom = (st["max_exp_avg_sq"] / bc2).sqrt().add_(eps)
                else:
                    denom = (v / bc2).sqrt().add_(eps)
                step_lr = lr
                if group["clip"]:
                    v_hat = v / bc2
                    rms = (g.pow(2) / v_hat.clamp(min=eps * eps)).mean().sqrt().item()
                    step_lr = lr / max(1.0, rms)
                if wd:
                    p.mul_(1 - step_lr * wd)
                p.addcdiv_(m, denom, value=-step_lr / bc1)
        return loss


def warm_cosine_lr(it: int, total: int, base: float, final: float, warmup: int) -> float:
    """Linear warm-up from 0 to `base` over `warmup` iterations, then cosine from `base` to
    `final` over the remaining ones (Dinomaly: warm-up 100, 2e-3 -> 2e-4)."""
    warmup = min(warmup, total)
    if it < warmup:
        return base * it / max(1, warmup - 1) if warmup > 1 else base
    n = max(1, total - warmup)
    i = min(it - warmup, n)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / n))
