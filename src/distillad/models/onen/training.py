"""The training loop shared by OneN, its teacher and the baselines (paper section 4,
"Implementation Details"): Adam (beta 0.9 / 0.999) lr 4e-4, weight decay 0.05, batches of 128,
early stopping with patience 35 on the training loss, augmentation on every batch.

Model selection (section 4, "evaluation protocols"):
- TR-AW (default): the weights of the epoch with the lowest training loss; no test data seen.
- T-AW: the weights of the epoch with the best accuracy on a selection set (the paper uses the
  test set: an optimistic upper bound, flagged wherever it is used).
Left open, decided here: the maximum number of epochs (`epochs`); "Adam with weight decay" is
torch's Adam (L2 added to the gradient) by default, decoupled AdamW on request.
"""
from __future__ import annotations

import copy
import logging
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ...training import Checkpointer
from .data import Augment, TrainingArrays

log = logging.getLogger(__name__)


def make_optimizer(params, kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r} (adam, adamw)")


def batch_tensors(arrays: TrainingArrays, idx: np.ndarray, augment: Augment | None, rng: np.random.Generator,
                  normalise: Callable[[np.ndarray], torch.Tensor]):
    """(images B x 3 x S x S normalised, masks B x S x S float, labels B, has_target B)."""
    imgs, masks = [], []
    for i in idx:
        im, m = arrays.images[i], arrays.masks[i]
        if augment is not None:
            im, m = augment(im, m, rng)
        imgs.append(normalise(im))
        masks.append(torch.from_numpy(np.ascontiguousarray(m)).float())
    return (torch.stack(imgs), torch.stack(masks), torch.from_numpy(arrays.labels[idx]),
            torch.from_numpy(arrays.has_target[idx]))


def run_training(*, phase: str, module: torch.nn.Module, loss_fn: Callable, arrays: TrainingArrays,
                 normalise: Callable, optimizer: str, lr: float, weight_decay: float, batch_size: int,
                 epochs: int, patience: int, augment: Augment | None, seed: int, progress: bool,
                 checkpoint_dir: Path | None = None, resume: bool = False,
                 select: Callable[[torch.nn.Module], float] | None = None) -> dict:
    """Train `module` with `loss_fn(module, x, masks, labels, has_target, generator) -> loss`.

    Returns a summary (epochs run, best epoch, losses). The module ends with the selected
    weights: lowest training loss (TR-AW), or best `select(module)` score (T-AW) when given.
    """
    from tqdm.auto import tqdm

    params = [p for p in module.parameters() if p.requires_grad]
    opt = make_optimizer(params, optimizer, lr, weight_decay)
    best = copy.deepcopy(module)
    state = {"epoch": 0, "best_loss": float("inf"), "best_select": -float("inf"), "best_epoch": -1,
             "bad_epochs": 0, "losses": [], "selects": []}
    ckpt = Checkpointer(checkpoint_dir / phase, every=1) if checkpoint_dir is not None else None
    if resume and ckpt is not None and ckpt.exists():
        _, extra = ckpt.load(modules={"model": module, "best": best}, optimizers={"opt": opt})
        state.update(extra)
        log.info("%s: resumed at epoch %d", phase, state["epoch"])
    n = len(arrays.labels)
    bar = tqdm(total=epochs, initial=state["epoch"], desc=f"onen {phase}", disable=not progress, leave=False)
    while state["epoch"] < epochs and state["bad_epochs"] < patience:
        e = state["epoch"]
        rng = np.random.default_rng([seed, zlib.crc32(phase.encode()), e])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        order = rng.permutation(n)
        module.train()
        total = 0.0
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            if len(idx) < 2 and n > 1:  # BatchNorm cannot train on one image
                continue
            x, m, y, has = batch_tensors(arrays, idx, augment, rng, normalise)
            loss = loss_fn(module, x, m, y, has, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        epoch_loss = total / n
        state["losses"].append(epoch_loss)
        if epoch_loss < state["best_loss"]:
            state["best_loss"], state["bad_epochs"] = epoch_loss, 0
            if select is None:
                best.load_state_dict(module.state_dict())
                state["best_epoch"] = e
        else:
            state["bad_epochs"] += 1
        if select is not None:
            module.eval()
            score = float(select(module))
            state["selects"].append(score)
            if score > state["best_select"]:
                state["best_select"], state["best_epoch"] = score, e
                best.load_state_dict(module.state_dict())
        state["epoch"] = e + 1
        bar.update(1)
        bar.set_postfix(loss=f"{epoch_loss:.4f}")
        log.info("%s epoch %d: loss %.5f", phase, e, epoch_loss)
        if ckpt is not None:
            ckpt.save(state["epoch"], modules={"model": module, "best": best}, optimizers={"opt": opt}, extra=state)
    bar.close()
    module.load_state_dict(best.state_dict())
    module.eval()
    return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_loss": state["best_loss"],
            "final_loss": state["losses"][-1] if state["losses"] else None,
            "stopped_early": state["bad_epochs"] >= patience,
            **({"best_selection_accuracy": state["best_select"]} if select is not None else {})}
