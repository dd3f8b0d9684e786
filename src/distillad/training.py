"""Plain-PyTorch training helpers shared by the methods: seeding, resumable checkpoints, and a
memory-bounded cache for frozen teacher features.

Checkpoints are safetensors + JSON (no pickle): module and optimiser states are flattened with
`io.flatten_state`; RNG states are stored as uint8 tensors so a resumed run continues the same
random stream (and so the same loss curve).
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import ModelFileError
from .io import flatten_state, read_json, read_tensors, unflatten_state, write_json, write_tensors


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Checkpointer:
    """Periodic, atomic, resumable training checkpoints in a folder.

    save(step, modules={"student": m}, optimizers={"opt": o}, extra={...}) writes
    `checkpoint.safetensors` + `checkpoint.json` (the JSON last, so a checkpoint counts only when
    complete). `load(modules, optimizers)` restores them and returns (step, extra) or None.
    """

    def __init__(self, folder: str | os.PathLike, every: int = 100):
        self.folder = Path(folder)
        self.every = max(1, int(every))

    @property
    def _json(self):
        return self.folder / "checkpoint.json"

    @property
    def _tensors(self):
        return self.folder / "checkpoint.safetensors"

    def due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0

    def save(self, step: int, modules: Mapping[str, torch.nn.Module] = {}, optimizers: Mapping[str, Any] = {},
             extra: Mapping[str, Any] | None = None, generators: Mapping[str, torch.Generator] = {}) -> None:
        tensors: dict[str, torch.Tensor] = {}
        skel: dict[str, Any] = {"step": int(step), "extra": dict(extra or {}), "modules": {}, "optimizers": {},
                                "generators": sorted(generators)}
        for name, m in modules.items():
            for k, v in m.state_dict().items():
                tensors[f"m.{name}.{k}"] = v
            skel["modules"][name] = True
        for name, o in optimizers.items():
            t, s = flatten_state(o.state_dict(), prefix=f"o.{name}")
            tensors.update(t)
            skel["optimizers"][name] = s
        for name, g in generators.items():
            tensors[f"g.{name}"] = g.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        skel["rng_numpy"] = _np_state_to_json(np.random.get_state())
        skel["rng_python"] = _py_state_to_json(random.getstate())
        self.folder.mkdir(parents=True, exist_ok=True)
        write_tensors(self._tensors, tensors)
        write_json(self._json, skel)

    def exists(self) -> bool:
        return self._json.exists() and self._tensors.exists()

    def load(self, modules: Mapping[str, torch.nn.Module] = {}, optimizers: Mapping[str, Any] = {},
             generators: Mapping[str, torch.Generator] = {}):
        if not self.exists():
            return None
        skel = read_json(self._json)
        tensors = read_tensors(self._tensors)
        try:
            for name, m in modules.items():
                pre = f"m.{name}."
                m.load_state_dict({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
            for name, o in optimizers.items():
                o.load_state_dict(unflatten_state(tensors, skel["optimizers"][name]))
            for name, g in generators.items():
                g.set_state(tensors[f"g.{name}"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise ModelFileError(f"{self.folder}: checkpoint does not fit this model/configuration ({e})") from None
        torch.set_rng_state(tensors["rng.torch"])
        np.random.set_state(_np_state_from_json(skel["rng_numpy"]))
        random.setstate(_py_state_from_json(skel["rng_python"]))
        return int(skel["step"]), skel["extra"]


def _np_state_to_json(st):
    return [st[0], st[1].tolist(), int(st[2]), int(st[3]), float(st[4])]


def _np_state_from_json(st):
    return (st[0], np.array(st[1], dtype=np.uint32), st[2], st[3], st[4])


def _py_state_to_json(st):
    return [st[0], list(st[1]), st[2]]


def _py_state_from_json(st):
    return (st[0], tuple(st[1]), st[2])


class FeatureCache:
    """Frozen-teacher features computed once, kept in memory up to `budget_bytes`, spilled to
    disk (one .npy per item, memory-mapped on read) beyond it.

    put(key, dict_of_tensors) / get(key) -> dict_of_tensors. Keys are ints (sample index).
    """

    def __init__(self, budget_bytes: int = 2 * 1024**3, spill_dir: str | os.PathLike | None = None):
        self.budget = int(budget_bytes)
        self.used = 0
        self._mem: dict[int, dict[str, torch.Tensor]] = {}
        self._disk: dict[int, dict[str, Path]] = {}
        self._spill_dir = Path(spill_dir) if spill_dir else None
        self._tmp = None

    def __len__(self):
        return len(self._mem) + len(self._disk)

    def __contains__(self, key):
        return key in self._mem or key in self._disk

    @property
    def spilled(self) -> int:
        return len(self._disk)

    def _dir(self) -> Path:
        if self._spill_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="distillad-cache-")
            self._spill_dir = Path(self._tmp.name)
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        return self._spill_dir

    def put(self, key: int, feats: Mapping[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in feats.values())
        if self.used + size <= self.budget:
            self._mem[key] = {k: v.detach().cpu() for k, v in feats.items()}
            self.used += size
            return
        d = self._dir()
        paths = {}
        for k, v in feats.items():
            p = d / f"{key}_{k}.npy"
            np.save(p, v.detach().cpu().numpy())
            paths[k] = p
        self._disk[key] = paths

    def get(self, key: int) -> dict[str, torch.Tensor]:
        if key in self._mem:
            return self._mem[key]
        return {k: torch.from_numpy(np.array(np.load(p, mmap_mode="r"))) for k, p in self._disk[key].items()}

    def close(self):
        self._mem.clear()
        self._disk.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
