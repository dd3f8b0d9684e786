"""Safe persistence: JSON + safetensors, written atomically, never pickle.

A file is first written next to its destination under a temporary name and then renamed onto
it (`os.replace` is atomic on POSIX), so an interrupted save leaves either the old file or the
new one, never a truncated one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelFileError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual mode
    return Path(tmp)


def make_temp_dir(near: Path) -> Path:
    """A temporary folder beside `near` with the usual permissions (mkdtemp makes 0700)."""
    near.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{near.name}.", dir=near.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: not valid JSON ({e})") from None


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str] | None = None) -> None:
    """Write a flat dict of tensors as safetensors, atomically."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(clean, str(tmp), metadata=dict(meta or {}))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from None


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure (e.g. an optimiser state_dict) into tensors + a JSON skeleton.

    Tensors are replaced in the skeleton by {"__tensor__": key}. `unflatten_state` inverts it.
    This lets checkpoints hold optimiser states without pickle.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj, key):
        if isinstance(obj, torch.Tensor):
            tensors[key] = obj
            return {"__tensor__": key}
        if isinstance(obj, Mapping):
            return {"__dict__": [[_key_json(k), walk(v, f"{key}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {"__list__": [walk(v, f"{key}.{i}") for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
        return obj

    skeleton = walk(state, prefix or "s")
    return tensors, skeleton


def _key_json(k):
    return k if isinstance(k, (str, int, float, bool)) or k is None else str(k)


def unflatten_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    def walk(obj):
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            if "__dict__" in obj:
                return {k: walk(v) for k, v in obj["__dict__"]}
            if "__list__" in obj:
                seq = [walk(v) for v in obj["__list__"]]
                return tuple(seq) if obj.get("tuple") else seq
        return obj

    return walk(skeleton)
