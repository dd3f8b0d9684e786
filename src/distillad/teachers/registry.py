"""The teacher registry: `create(name_or_file, weights=...)`, `available()`, `register_teacher`.

Built-in teachers (ViTs and CNNs built with timm, tiny test teachers) are registered on first
use; the PDN teachers of `pdn.py` register themselves when that module exists.

weights: None = the offline default (`$DISTILLAD_WEIGHTS/<name>.*`, then packaged weights:
EfficientNet-Lite0/2 only), "random" = explicit random init (seeded by config `seed`,
default 0), or a checkpoint file. A teacher file `<x>.safetensors` with a JSON sidecar
`<x>.json` = {"teacher": <registered name>, "config": {...}} is created with
`create("<x>.safetensors")`.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ModelFileError, WeightsNotFoundError
from . import weights as W
from .base import Teacher
from .build import build_timm

log = logging.getLogger(__name__)

__all__ = ["available", "build_timm", "create", "from_spec", "register_teacher"]


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., Teacher]
    kind: str
    description: str
    find_weights: Callable[[], str | None] | None


_REGISTRY: dict[str, _Entry] = {}
_builtin_loaded = False


def register_teacher(name: str, builder: Callable[..., Teacher], *, kind: str, description: str = "",
                     find_weights: Callable[[], str | None] | None = None) -> None:
    """Register `builder(weights, **config) -> Teacher` under `name`.

    find_weights: optional, says where this teacher's default weights are here (a description)
    or None; by default `$DISTILLAD_WEIGHTS/<name>.*` is looked at (for `available()`).
    Registering a name again replaces the builder, with a warning.
    """
    if name in _REGISTRY and _REGISTRY[name].builder is not builder:
        log.warning("teacher %r registered again: the new builder replaces the old one", name)
    _REGISTRY[name] = _Entry(name, builder, kind, description, find_weights)


def _ensure_builtin() -> None:
    global _builtin_loaded
    if _builtin_loaded:
        return
    _builtin_loaded = True
    from . import cnn, vit
    for name, builder, kind, description in vit.TEACHERS + cnn.TEACHERS:
        if name not in _REGISTRY:  # a user registration made earlier wins
            register_teacher(name, builder, kind=kind, description=description)
    try:  # PDN teachers (hkt) live in their own module, which may not exist
        pdn = importlib.import_module(f"{__package__}.pdn")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.pdn":
            raise
    else:
        if "pdn_s" not in _REGISTRY and callable(getattr(pdn, "_register", None)):
            pdn._register()


def names() -> list[str]:
    _ensure_builtin()
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(sorted(_REGISTRY))} "
                         f"(or a teacher file <x>.safetensors with a <x>.json sidecar)")
    return _REGISTRY[name]


def _is_file_spec(name_or_path) -> bool:
    return isinstance(name_or_path, os.PathLike) or str(name_or_path).endswith(W.SUFFIXES) \
        or os.sep in str(name_or_path)


def _read_sidecar(path: Path) -> tuple[str, dict]:
    side = path.with_suffix(".json")
    if not path.is_file():
        raise WeightsNotFoundError(f"teacher file {path} does not exist")
    if not side.is_file():
        raise ModelFileError(f"teacher file {path} has no sidecar {side.name} naming its teacher; "
                             f"for a checkpoint of a known architecture use create(<name>, weights='{path}')")
    try:
        meta = json.loads(side.read_text())
        name, config = meta["teacher"], meta.get("config") or {}
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{side}: not a teacher sidecar (needs {{\"teacher\": <name>, \"config\": {{...}}}}): {e}") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{side}: 'config' must be an object")
    return name, config


def create(name_or_path: str | os.PathLike, weights: str | os.PathLike | None = None, **config) -> Teacher:
    """A frozen teacher (eval mode, no gradients) by registry name or teacher file.

    weights: None (offline default; `WeightsNotFoundError` naming the file to provide when
    there is none), "random" (explicit, seeded by `seed=`), or a checkpoint file in timm or the
    architecture's original format. config: builder options recorded in `teacher.config`
    (ViTs: `img_size`, timm architecture overrides such as `depth`; random teachers: `seed`).
    """
    if _is_file_spec(name_or_path):
        path = Path(name_or_path).expanduser()
        if weights is not None:
            raise ValueError(f"teacher file {path} carries its own weights: do not pass weights=")
        name, file_config = _read_sidecar(path)
        entry = _entry(name)
        teacher = entry.builder(str(path), **{**file_config, **config})
    else:
        entry = _entry(str(name_or_path))
        if weights is None:  # the weights folder serves every registered teacher alike
            found = W.find_in_env_folder(entry.name)
            weights = str(found.path) if found else None
        teacher = entry.builder(weights, **config)
    if not isinstance(teacher, Teacher):
        raise TypeError(f"builder of teacher {entry.name!r} returned {type(teacher).__name__}, not a Teacher")
    if not teacher.name:
        teacher.name = entry.name
    return teacher.freeze()


def from_spec(spec: dict, weights: str | os.PathLike | None = None) -> Teacher:
    """Rebuild the teacher described by `Teacher.spec()` and check it is the very same one.

    weights: overrides where the weights come from; by default "random" for a random teacher,
    the recorded file when it still exists, else the offline default lookup.
    """
    if weights is None:
        src = spec.get("weights") or ""
        weights = "random" if src == "random" else (src if Path(src).is_file() else None)
    t = create(spec["name"], weights=weights, **(spec.get("config") or {}))
    if spec.get("fingerprint") and t.fingerprint() != spec["fingerprint"]:
        raise ModelFileError(f"teacher {spec['name']}: weights {t.weights_source} (fingerprint {t.fingerprint()}) "
                             f"are not the recorded ones ({spec.get('weights')}, fingerprint {spec['fingerprint']})")
    return t


def available() -> list[dict]:
    """One dict per registered teacher: name, kind, description, weights_present (bool) and
    weights_here (where the offline default weights are found here, or None). Used by
    `distillad teachers`."""
    _ensure_builtin()
    rows = []
    for name in sorted(_REGISTRY):
        e = _REGISTRY[name]
        if e.find_weights is not None:
            here = e.find_weights()
        else:
            found = W.find_default(name)
            here = found.source if found else None
        rows.append({"name": name, "kind": e.kind, "description": e.description,
                     "weights_present": here is not None, "weights_here": here})
    return rows
