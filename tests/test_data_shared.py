"""Integration: the three real sets in ../shared/datasets open with the counts their README gives."""
from collections import Counter
from pathlib import Path

import pytest

from distillad.data import open_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
HAZELNUT = SHARED / "mvtec_hazelnut_subset" / "hazelnut"
MTSD = SHARED / "magnetic_tile"
DEEPPCB = SHARED / "deeppcb"

pytestmark = pytest.mark.shared_data


def need(path: Path):
    if not path.exists():
        pytest.skip(f"shared dataset not present: {path}")


def test_hazelnut_subset():
    need(HAZELNUT)
    sp = open_dataset(f"mvtec:{HAZELNUT}")    # masks named <stem>.png: found by the auto suffix
    assert len(sp.train) == 28
    assert Counter(s.defect_type for s in sp.test) == {"good": 6, "colour": 17}
    bad = [s for s in sp.test if s.label][0]
    assert Path(bad.mask).name == Path(bad.image).stem + ".png"
    m = bad.load_mask()
    assert m.shape == bad.load_image().shape[:2] and 0 < m.mean() < 0.5


def test_mtsd_counts():
    need(MTSD)
    sp = open_dataset(f"mtsd:{MTSD}")
    assert len(sp.train) == 714 and len(sp.test) == 238 + 115 + 85 + 57 + 32 + 103
    assert Counter(s.defect_type for s in sp.test if s.label) == {"blowhole": 115, "break": 85, "crack": 57,
                                                                  "fray": 32, "uneven": 103}
    s = next(s for s in sp.test if s.defect_type == "crack")
    assert s.load_mask().shape == s.load_image().shape[:2] and s.load_mask().any()
    cls = open_dataset(f"mtsd:{MTSD}?task=classification")
    assert len(cls.train) + len(cls.test) == 952 + 392
    assert Counter(s.class_id for s in cls.test)[0] == 238


def test_deeppcb_counts():
    need(DEEPPCB)
    sp = open_dataset(f"deeppcb:{DEEPPCB}")
    n_templates, n_tests = 14 + 100 + 79 + 107 + 75 + 120, 14 + 100 + 79 + 107 + 74 + 120
    assert len(sp.train) + sum(1 for s in sp.test if s.label == 0) == n_templates
    assert sum(s.label for s in sp.test) == n_tests
    assert all(s.boxes and len(s.boxes) == len(s.meta["defect_types"]) for s in sp.test if s.label)
    s = next(s for s in sp.test if s.label)
    assert s.load_mask().shape == (640, 640) and s.load_mask().any()
