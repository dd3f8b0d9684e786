"""Few-shot training sets and multi-class (several categories, one model) splits.

Results per category are computed by the evaluator from `Sample.category`; the loaders here only
keep that field right.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError
from .samples import Split


def few_shot(split: Split, k: int, seed: int = 0) -> Split:
    """Keep k normal training images per category (seeded, deterministic); the test set is unchanged.

    The choice depends only on (seed, category, the category's training list), so the same k-shot
    set comes back whatever other categories the split holds. Anomalous training samples (present
    only in supervised splits such as MTSD classification) are dropped: few-shot means k normal
    images.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    train = []
    for cat in sorted({s.category for s in split.train}):
        normals = [s for s in split.train if s.category == cat and s.label == 0]
        if len(normals) < k:
            raise DataError(f"{split.name}: category {cat or '<none>'!r} has {len(normals)} normal training "
                            f"images, fewer than k={k}")
        rng = np.random.default_rng([int(seed), _stable_hash(cat)])
        keep = sorted(rng.choice(len(normals), size=k, replace=False))
        train += [normals[i] for i in keep]
    return Split(f"{split.name}/{k}shot", train, list(split.test), split.class_names)


def multiclass(splits: Sequence[Split], name: str | None = None) -> Split:
    """Merge several splits into one multi-class split (one model trained on all categories).

    Each sample keeps its `category`; samples without one get their split's name. Two splits
    with the same category would make per-category results ambiguous: that is an error.
    """
    splits = list(splits)
    if not splits:
        raise ValueError("multiclass needs at least one split")
    train, test, seen = [], [], {}
    for sp in splits:
        cats = set()
        for part, out in ((sp.train, train), (sp.test, test)):
            for s in part:
                s = s if s.category else s.with_(category=sp.name)
                cats.add(s.category)
                out.append(s)
        for c in cats:
            if c in seen:
                raise DataError(f"category {c!r} appears in both {seen[c]!r} and {sp.name!r}; "
                                "give the splits distinct categories")
            seen[c] = sp.name
    names = {sp.class_names for sp in splits}
    class_names = names.pop() if len(names) == 1 else ()
    return Split(name or "+".join(sp.name for sp in splits), train, test, class_names)


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8"))
