"""`open_dataset(spec, **options)`: one string names a dataset (what the CLI's `--data` takes).

Grammar: ``kind:path[?key=value&key=value]``; several specs separated by commas form one
multi-class split (`multiclass`; each part keeps its `Sample.category`). List values inside an
option use ``;`` (``anomalous=scratch;dent``). Keyword options apply to every spec of the list
and win over inline ones. A bare path holding `train/` and `test/` is read as MVTec AD.

=============  ======================================  =============================================
kind           path                                    options
=============  ======================================  =============================================
mvtec          category folder, or a root of them      mask_suffix (auto | _mask | "" ), good
visa           VisA root                               split_csv (default split_csv/1cls.csv),
                                                       categories
btad           product folder (01, 02, 03) or root     -
loco           MVTec LOCO category folder or root      include_validation
folder         root of a generic layout                normal (default good), anomalous (default:
                                                       every other sub-folder), masks (default
                                                       ground_truth / masks / gt when present),
                                                       test_normal, train_fraction, mask_suffix,
                                                       category; relative paths are below root
mtsd           magnetic_tile folder                    task (unsupervised | classification),
                                                       train_fraction, setting (OneN table 1:
                                                       STD, STD+G, STD+BG, STD+G+BG, B, B+BG;
                                                       with task=classification)
deeppcb        DeepPCB folder (or its PCBData)         task, train_fraction, test_pairs, groups,
                                                       setting (as mtsd)
fmnist         IDX folder (default                     normal (class index / name, or a ``;``
               /usr/share/datasets/fashion-mnist)      list) or split (A-D), train_per_class,
                                                       test_per_class
imagefolder    ImageFolder tree                        as fmnist, plus train_fraction
demo           (none)                                  categories, n_train, n_test, size
=============  ======================================  =============================================

Every kind also takes `seed` (seeded splits), `shots` (keep k normal training images per
category, `few_shot`) and `tiles=N` (cut every image into N x N tiles, each its own sample, as
OneN does with its PCB images; `tile_keep=0.1` keeps a seeded tenth of them, and alone tiles
3 x 3: `data.tiles`).
Order: load, tile, input setting, shots. Errors name the spec and the path.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import DataError
from .samples import Split

_LIST = "list"
# option -> type; "path" values are resolved below the spec's path
_OPTION_TYPES = {
    "seed": int, "shots": int, "mask_suffix": str, "good": str, "split_csv": "path", "categories": _LIST,
    "include_validation": bool, "normal": _LIST, "anomalous": _LIST, "masks": "path", "test_normal": "path",
    "train_fraction": float, "category": str, "task": str, "test_pairs": str, "groups": _LIST,
    "split": str, "setting": str, "tiles": int, "tile_keep": float, "train_per_class": int, "test_per_class": int, "n_train": int, "n_test": int, "size": int,
}
_KIND_OPTIONS = {
    "mvtec": {"mask_suffix", "good"},
    "visa": {"split_csv", "categories"},
    "btad": set(),
    "loco": {"include_validation"},
    "folder": {"normal", "anomalous", "masks", "test_normal", "train_fraction", "mask_suffix", "category"},
    "mtsd": {"task", "train_fraction", "setting"},
    "deeppcb": {"task", "train_fraction", "test_pairs", "groups", "setting"},
    "fmnist": {"normal", "split", "train_per_class", "test_per_class"},
    "imagefolder": {"normal", "split", "train_per_class", "test_per_class", "train_fraction"},
    "demo": {"categories", "n_train", "n_test", "size"},
}
_ALIASES = {"csv": "split_csv", "mvtec_loco": "loco", "fashion_mnist": "fmnist", "fashion-mnist": "fmnist",
            "k": "shots"}
KINDS = tuple(_KIND_OPTIONS)


def open_dataset(spec: str, **options) -> Split:
    """Open the dataset a spec string names (see the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty dataset spec {spec!r} (expected kind:path, e.g. mvtec:/data/hazelnut)")
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) == 1:
        return _open_one(parts[0], options)
    from .fewshot import multiclass

    splits = [_open_one(p, options) for p in parts]
    try:
        return multiclass(splits, name="+".join(s.name for s in splits))
    except DataError as e:
        raise DataError(f"{spec}: {e}") from None


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """`kind:path?k=v&k=v` -> (kind, path, inline options as strings)."""
    body, _, query = spec.partition("?")
    kind, sep, path = body.partition(":")
    kind_l = kind.strip().lower()
    kind_l = _ALIASES.get(kind_l, kind_l)
    if not sep or kind_l not in KINDS:
        if body.strip().lower() in KINDS:   # "demo", "fmnist" without a path
            kind_l, path = _ALIASES.get(body.strip().lower(), body.strip().lower()), ""
        elif (Path(body) / "train").is_dir() and (Path(body) / "test").is_dir():
            kind_l, path = "mvtec", body
        else:
            raise DataError(f"{spec}: unknown dataset kind {kind.strip()!r} (expected one of "
                            f"{', '.join(KINDS)}, as kind:path)")
    opts = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        opts[_ALIASES.get(k, k)] = v
    return kind_l, path.strip(), opts


def _coerce(spec: str, key: str, value, base: Path | None):
    t = _OPTION_TYPES[key]
    if t is _LIST:
        items = value.split(";") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
        return [i.strip() if isinstance(i, str) else i for i in items if not (isinstance(i, str) and not i.strip())]
    if t == "path":
        p = Path(value).expanduser()
        return p if p.is_absolute() or base is None else base / p
    if not isinstance(value, str):
        return value
    try:
        if t is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return t(value)
    except ValueError:
        raise DataError(f"{spec}: option {key}={value!r} is not a valid {t.__name__}") from None


def _open_one(spec: str, kw: dict) -> Split:
    from .fewshot import few_shot

    kind, path, inline = parse_spec(spec)
    merged = {**inline, **{_ALIASES.get(k, k): v for k, v in kw.items()}}
    allowed = _KIND_OPTIONS[kind] | {"seed", "shots", "tiles", "tile_keep"}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise DataError(f"{spec}: option(s) {', '.join(unknown)} not understood by {kind!r} "
                        f"(accepted: {', '.join(sorted(allowed))})")
    base = Path(path).expanduser() if path else None
    opts = {k: _coerce(spec, k, v, base) for k, v in merged.items() if v is not None}
    shots = opts.pop("shots", None)
    setting = opts.pop("setting", None)
    tiles, tile_keep = opts.pop("tiles", None), opts.pop("tile_keep", None)
    seed = opts.get("seed", 0)
    try:
        split = _LOADERS[kind](spec, base, opts)
        if setting is not None and opts.get("task") != "classification":
            raise DataError(f"option setting={setting} needs task=classification")
        try:  # the split transforms below reject bad values with ValueError
            if tiles is not None or tile_keep is not None:
                from .tiles import tile_split
                split = tile_split(split, tiles if tiles is not None else 3, 1.0 if tile_keep is None else tile_keep, seed)
            if setting is not None:
                # OneN's input settings of table 1 (STD, STD+G, STD+BG, STD+G+BG, B, B+BG) re-label a
                # classification split; they live with the method that defines them
                from ..models.onen.data import input_setting
                # parse_qsl reads "+" as a space: "STD+G" arrives as "STD G"
                split = input_setting(split, setting.upper().replace(" ", "+"), seed=seed)
        except ValueError as e:
            raise DataError(str(e)) from None
        if shots is not None:
            split = few_shot(split, shots, seed)
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith(spec) else f"{spec}: {msg}") from None
    return split


def _need_path(spec: str, base: Path | None, what: str) -> Path:
    if base is None:
        raise DataError(f"{spec}: needs a path to the {what} (kind:path)")
    if not base.exists():
        raise DataError(f"{spec}: {base} not found")
    return base


def _mvtec(spec, base, o):
    from .mvtec import mvtec

    return mvtec(_need_path(spec, base, "MVTec AD category folder"), mask_suffix=o.get("mask_suffix", "auto"),
                 good=o.get("good", "good"))


def _visa(spec, base, o):
    from .mvtec import visa

    cats = o.get("categories")
    return visa(_need_path(spec, base, "VisA folder"), o.get("split_csv"), categories=tuple(cats) if cats else None)


def _btad(spec, base, o):
    from .mvtec import btad

    return btad(_need_path(spec, base, "BTAD folder"))


def _loco(spec, base, o):
    from .mvtec import mvtec_loco

    return mvtec_loco(_need_path(spec, base, "MVTec LOCO folder"), include_validation=o.get("include_validation", False))


_MASK_DIR_NAMES = ("ground_truth", "masks", "gt")


def _folder(spec, base, o):
    from .folders import folder_dataset, is_image_file

    root = _need_path(spec, base, "image folder")
    normal = o.get("normal")
    if normal:
        if len(normal) != 1:
            raise DataError(f"{spec}: folder takes one normal folder, got {normal}")
        normal_dir = root / normal[0]
    elif any(is_image_file(p) for p in root.iterdir()):
        normal_dir = root  # the path itself is the normal folder
    else:
        normal_dir = root / "good"
    masks = o.get("masks")
    if masks is None:
        masks = next((root / n for n in _MASK_DIR_NAMES if (root / n).is_dir() and root / n != normal_dir), None)
    anomalous = o.get("anomalous")
    if anomalous is None:
        skip = {normal_dir.resolve(), *(p.resolve() for p in (masks, o.get("test_normal")) if p is not None)}
        anomalous = sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() not in skip
                           and p.name not in _MASK_DIR_NAMES) if normal_dir != root else []
    else:
        anomalous = [Path(a) if Path(a).is_absolute() else root / a for a in anomalous]
    return folder_dataset(normal_dir, anomalous, masks, test_normal=o.get("test_normal"),
                          train_fraction=o.get("train_fraction", 0.75), seed=o.get("seed", 0),
                          mask_suffix=o.get("mask_suffix", "auto"), category=o.get("category", ""))


def _mtsd(spec, base, o):
    from .mtsd import mtsd

    return mtsd(_need_path(spec, base, "magnetic_tile folder"), task=o.get("task", "unsupervised"),
                seed=o.get("seed", 0), train_fraction=o.get("train_fraction", 0.75))


def _deeppcb(spec, base, o):
    from .deeppcb import deeppcb

    groups = o.get("groups")
    return deeppcb(_need_path(spec, base, "DeepPCB folder"), task=o.get("task", "unsupervised"), seed=o.get("seed", 0),
                   train_fraction=o.get("train_fraction", 0.75), test_pairs=o.get("test_pairs", "all"),
                   groups=tuple(groups) if groups else None)


def _semantic(spec, data, o):
    from .semantic import normal_vs_rest, one_vs_rest, semantic_split

    kw = {"train_per_class": o.get("train_per_class"), "test_per_class": o.get("test_per_class"),
          "seed": o.get("seed", 0)}
    normal, split = o.get("normal"), o.get("split")
    if bool(normal) == bool(split):
        raise DataError(f"{spec}: give either normal=<class> (one-vs-rest; classes: {', '.join(data.class_names)}) "
                        "or split=A|B|C|D (the dual-student multi-class splits)")
    if split:
        return semantic_split(data, split, **kw)
    if len(normal) == 1:
        return one_vs_rest(data, normal[0], **kw)
    return normal_vs_rest(data, normal, **kw)


def _fmnist(spec, base, o):
    from .semantic import DEFAULT_FASHION_MNIST_ROOT, fashion_mnist

    return _semantic(spec, fashion_mnist(base if base is not None else DEFAULT_FASHION_MNIST_ROOT), o)


def _imagefolder(spec, base, o):
    from .semantic import image_folder

    data = image_folder(_need_path(spec, base, "ImageFolder tree"), train_fraction=o.get("train_fraction", 0.75),
                        seed=o.get("seed", 0))
    return _semantic(spec, data, o)


def _demo(spec, base, o):
    from .demo import demo_dataset

    kw = {k: o[k] for k in ("n_train", "n_test", "size") if k in o}
    if o.get("categories"):
        kw["categories"] = tuple(o["categories"])
    return demo_dataset(seed=o.get("seed", 0), **kw)


_LOADERS = {"mvtec": _mvtec, "visa": _visa, "btad": _btad, "loco": _loco, "folder": _folder, "mtsd": _mtsd,
            "deeppcb": _deeppcb, "fmnist": _fmnist, "imagefolder": _imagefolder, "demo": _demo}
