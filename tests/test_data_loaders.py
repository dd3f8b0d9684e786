"""Folder-based loaders on tiny synthetic layouts (no shared data needed)."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distillad.data import (MTSD_CLASSES, Split, btad, deeppcb, few_shot, folder_dataset, multiclass, mtsd,
                            mvtec, mvtec_loco, open_dataset, visa)
from distillad.errors import DataError


def write_img(path: Path, hw=(12, 16), value=None, ext=None, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    shape = (*hw, 3) if mode == "RGB" else hw
    a = rng.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    Image.fromarray(a).save(path)
    return path


def write_mask(path: Path, hw=(12, 16), box=(2, 3, 5, 6), value=255):
    m = np.zeros(hw, np.uint8)
    y, x, h, w = box
    m[y : y + h, x : x + w] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)
    return path


def make_mvtec(root: Path, suffix="_mask", n_train=4, n_good=2, defects=(("crack", 3), ("hole", 2)), good="good",
               img_ext=".png"):
    for i in range(n_train):
        write_img(root / "train" / good / f"{i:03d}{img_ext}")
    for i in range(n_good):
        write_img(root / "test" / good / f"{i:03d}{img_ext}")
    for d, n in defects:
        for i in range(n):
            write_img(root / "test" / d / f"{i:03d}{img_ext}")
            write_mask(root / "ground_truth" / d / f"{i:03d}{suffix}.png")
    return root


# ------------------------------------------------------------------ MVTec AD, BTAD, LOCO, VisA

@pytest.mark.parametrize("suffix", ["_mask", ""])
def test_mvtec_layout_and_mask_suffix_autodetection(tmp_path, suffix):
    root = make_mvtec(tmp_path / "widget", suffix=suffix)
    sp = mvtec(root)
    assert sp.name == "widget" and len(sp.train) == 4 and len(sp.test) == 7
    assert all(s.label == 0 and s.category == "widget" for s in sp.train)
    assert Counter(s.defect_type for s in sp.test) == {"good": 2, "crack": 3, "hole": 2}
    bad = [s for s in sp.test if s.label == 1]
    assert all(Path(s.mask).name == f"{Path(s.image).stem}{suffix}.png" for s in bad)
    m = bad[0].load_mask()
    assert m.shape == (12, 16) and m.sum() == 5 * 6 and m[2:7, 3:9].all()
    assert [s for s in sp.test if s.label == 0][0].load_mask().sum() == 0
    # the explicit suffix works too, and a wrong one names the image and the expected path
    assert len(mvtec(root, mask_suffix=suffix).test) == 7
    with pytest.raises(DataError, match=r"crack.*000\.png.*expected .*000_other\.png"):
        mvtec(root, mask_suffix="_other")


def test_mvtec_missing_mask_names_image_and_expected_path(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    (root / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(DataError) as e:
        mvtec(root)
    msg = str(e.value)
    assert str(root / "test" / "hole" / "001.png") in msg and "001_mask.png" in msg


def test_mvtec_missing_mask_folder_and_empty_folders(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    for f in (root / "ground_truth" / "crack").iterdir():
        f.unlink()
    (root / "ground_truth" / "crack").rmdir()
    with pytest.raises(DataError, match="mask folder"):
        mvtec(root)
    root2 = make_mvtec(tmp_path / "other")
    for f in (root2 / "train" / "good").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train.good.*contains no images"):
        mvtec(root2)
    with pytest.raises(DataError, match="not found"):
        mvtec(tmp_path / "nothing")


def test_mvtec_root_of_categories_is_multiclass(tmp_path):
    make_mvtec(tmp_path / "mv" / "a")
    make_mvtec(tmp_path / "mv" / "b", suffix="")
    sp = mvtec(tmp_path / "mv")
    assert sp.categories == ["a", "b"] and len(sp.train) == 8
    assert len(sp.category("b").test) == 7


def test_mvtec_pixels_are_read_lazily(tmp_path):
    root = make_mvtec(tmp_path / "widget")
    (root / "train" / "good" / "001.png").write_bytes(b"not an image")
    sp = mvtec(root)  # listing succeeds: decoding is lazy
    bad = [s for s in sp.train if s.image.endswith("001.png")][0]
    with pytest.raises(DataError, match="001.png"):
        bad.load_image()


def test_btad_layout(tmp_path):
    root = tmp_path / "01"
    for i in range(3):
        write_img(root / "train" / "ok" / f"{i:04d}.bmp")
    write_img(root / "test" / "ok" / "0000.bmp")
    write_img(root / "test" / "ko" / "0000.bmp")
    write_mask(root / "ground_truth" / "ko" / "0000.png")
    sp = btad(root)
    assert len(sp.train) == 3 and Counter(s.label for s in sp.test) == {0: 1, 1: 1}
    assert [s.defect_type for s in sp.test if s.label] == ["ko"]
    assert sp.test[0].load_image().shape == (12, 16, 3)


def test_mvtec_loco_union_of_mask_files(tmp_path):
    root = tmp_path / "juice_bottle"
    for i in range(2):
        write_img(root / "train" / "good" / f"{i:03d}.png")
    write_img(root / "validation" / "good" / "000.png")
    write_img(root / "test" / "good" / "000.png")
    write_img(root / "test" / "logical_anomalies" / "000.png")
    write_mask(root / "ground_truth" / "logical_anomalies" / "000" / "000.png", box=(0, 0, 2, 2), value=255)
    write_mask(root / "ground_truth" / "logical_anomalies" / "000" / "001.png", box=(8, 8, 3, 3), value=7)
    write_img(root / "test" / "structural_anomalies" / "000.png")
    sp_missing = None
    with pytest.raises(DataError, match=r"structural_anomalies.000\.png.*no mask"):
        sp_missing = mvtec_loco(root)
    assert sp_missing is None
    write_mask(root / "ground_truth" / "structural_anomalies" / "000" / "000.png")
    sp = mvtec_loco(root)
    assert len(sp.train) == 2 and len(mvtec_loco(root, include_validation=True).train) == 3
    logical = [s for s in sp.test if s.defect_type == "logical_anomalies"][0]
    m = logical.load_mask()
    assert m.sum() == 4 + 9 and m[0, 0] and m[9, 9]   # union, any non-zero value


def test_visa_split_csv_nonzero_masks(tmp_path):
    root = tmp_path / "VisA"
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        write_img(root / "candle/Data/Images/Normal" / f"{i:04d}.JPG")
        rows.append(f"candle,train,normal,candle/Data/Images/Normal/{i:04d}.JPG,")
    write_img(root / "candle/Data/Images/Normal/0100.JPG")
    rows.append("candle,test,normal,candle/Data/Images/Normal/0100.JPG,")
    write_img(root / "candle/Data/Images/Anomaly/000.JPG")
    write_mask(root / "candle/Data/Masks/Anomaly/000.png", value=1)   # VisA stores the defect index
    rows.append("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png")
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    sp = visa(root)
    assert sp.name == "candle" and len(sp.train) == 3 and len(sp.test) == 2
    bad = [s for s in sp.test if s.label == 1][0]
    assert bad.load_mask().sum() == 30
    # a row whose mask file is missing is an error naming the image and the mask path
    (root / "candle/Data/Masks/Anomaly/000.png").unlink()
    with pytest.raises(DataError, match=r"Anomaly.000\.JPG.*expected .*Masks.Anomaly.000\.png"):
        visa(root)
    with pytest.raises(DataError, match="split CSV not found"):
        visa(root, tmp_path / "missing.csv")


# ------------------------------------------------------------------ generic folders

def make_folder_layout(root: Path, n_normal=8):
    for i in range(n_normal):
        write_img(root / "good" / f"n{i}.png")
    for d in ("scratch", "dent"):
        for i in range(2):
            write_img(root / d / f"{d}{i}.png")
            write_mask(root / "ground_truth" / d / f"{d}{i}_mask.png")
    return root


def test_folder_dataset_seeded_split_and_masks(tmp_path):
    root = make_folder_layout(tmp_path / "parts")
    sp = folder_dataset(root / "good", [root / "scratch", root / "dent"], root / "ground_truth", seed=3)
    assert len(sp.train) == 6 and len(sp.test) == 2 + 4
    again = folder_dataset(root / "good", [root / "scratch", root / "dent"], root / "ground_truth", seed=3)
    assert [s.image for s in sp.train] == [s.image for s in again.train]
    other = [folder_dataset(root / "good", [], None, seed=s).train for s in range(6)]
    assert len({tuple(s.image for s in tr) for tr in other}) > 1
    assert not set(s.image for s in sp.train) & set(s.image for s in sp.test)
    assert all(s.load_mask().sum() == 30 for s in sp.test if s.label == 1)
    # without a mask folder anomalous samples have no pixel ground truth
    nomask = folder_dataset(root / "good", root / "dent")
    assert all(s.mask is None and s.label == 1 for s in nomask.test if s.defect_type == "dent")


def test_folder_dataset_missing_mask_and_empty_class(tmp_path):
    root = make_folder_layout(tmp_path / "parts")
    (root / "ground_truth" / "dent" / "dent1_mask.png").unlink()
    with pytest.raises(DataError, match=r"dent1\.png.*expected"):
        folder_dataset(root / "good", [root / "dent"], root / "ground_truth")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*contains no images"):
        folder_dataset(root / "good", [root / "empty"])


def test_open_dataset_folder_spec(tmp_path):
    root = make_folder_layout(tmp_path / "parts")
    sp = open_dataset(f"folder:{root}")          # good/, other folders anomalous, ground_truth/ masks
    assert Counter(s.defect_type for s in sp.test) == {"good": 2, "scratch": 2, "dent": 2}
    assert all(s.mask is not None for s in sp.test if s.label)
    sp = open_dataset(f"folder:{root}?anomalous=dent&train_fraction=0.5&seed=1")
    assert len(sp.train) == 4 and Counter(s.defect_type for s in sp.test) == {"good": 4, "dent": 2}
    sp = open_dataset(f"folder:{root}", anomalous=["scratch"], masks=str(root / "ground_truth"))
    assert {s.defect_type for s in sp.test} == {"good", "scratch"}


# ------------------------------------------------------------------ MTSD

def make_mtsd(root: Path, counts=None):
    counts = counts or {"free": 8, "blowhole": 4, "break": 4, "crack": 4, "fray": 4, "uneven": 4}
    for c, n in counts.items():
        for i in range(n):
            d = root / f"MT_{c.capitalize()}" / "Imgs"
            write_img(d / f"exp1_num_{i}.jpg", mode="L")
            empty = c == "free" or (c == "uneven" and i == 0)
            write_mask(d / f"exp1_num_{i}.png", value=0 if empty else 255)
    return root


def test_mtsd_unsupervised(tmp_path):
    root = make_mtsd(tmp_path / "magnetic_tile")
    sp = mtsd(root, seed=0)
    assert len(sp.train) == 6 and all(s.label == 0 for s in sp.train)
    assert Counter(s.defect_type for s in sp.test) == {"good": 2, "blowhole": 4, "break": 4, "crack": 4,
                                                        "fray": 4, "uneven": 4}
    # an empty MT_Uneven mask stays an anomalous sample with an all-False mask
    uneven0 = [s for s in sp.test if s.defect_type == "uneven" and s.image.endswith("_0.jpg")][0]
    assert uneven0.label == 1 and uneven0.load_mask().sum() == 0
    blow = [s for s in sp.test if s.defect_type == "blowhole"][0]
    assert blow.load_mask().sum() == 30 and blow.load_image().shape == (12, 16, 3)
    assert [s.image for s in mtsd(root, seed=0).train] == [s.image for s in sp.train]
    assert {tuple(s.image for s in mtsd(root, seed=k).train) for k in range(5)} != {tuple(s.image for s in sp.train)}


def test_mtsd_classification_stratified(tmp_path):
    root = make_mtsd(tmp_path / "magnetic_tile")
    sp = mtsd(root, task="classification", seed=1)
    assert sp.class_names == MTSD_CLASSES == ("free", "blowhole", "break", "crack", "fray", "uneven")
    assert Counter(s.class_id for s in sp.train) == {0: 6, 1: 3, 2: 3, 3: 3, 4: 3, 5: 3}
    assert Counter(s.class_id for s in sp.test) == {0: 2, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert all(sp.class_names[s.class_id] == s.defect_type for s in sp.train if s.label)
    assert all(s.mask is not None for s in sp.train if s.label)


def test_mtsd_missing_mask_and_folder(tmp_path):
    root = make_mtsd(tmp_path / "magnetic_tile")
    (root / "MT_Crack" / "Imgs" / "exp1_num_2.png").unlink()
    with pytest.raises(DataError, match=r"exp1_num_2\.jpg.*expected .*exp1_num_2\.png"):
        mtsd(root)
    with pytest.raises(DataError, match="MT_Fray"):
        mtsd(make_mtsd(tmp_path / "mt2", {"free": 4, "blowhole": 1, "break": 1, "crack": 1, "uneven": 1}))


# ------------------------------------------------------------------ DeepPCB

def make_deeppcb(root: Path):
    groups = {"group100": 4, "group200": 5}
    for g, n in groups.items():
        num = g[5:]
        for i in range(n):
            pid = f"{num}{i:03d}"
            write_img(root / "PCBData" / g / num / f"{pid}_temp.jpg", hw=(40, 40), mode="L")
            write_img(root / "PCBData" / g / num / f"{pid}_test.jpg", hw=(40, 40), mode="L")
            sep = " " if i % 2 else ","
            lines = [sep.join(map(str, (2, 3, 6, 9, 1))), sep.join(map(str, (20, 20, 30, 25, 6)))]
            (root / "PCBData" / g / f"{num}_not").mkdir(parents=True, exist_ok=True)
            (root / "PCBData" / g / f"{num}_not" / f"{pid}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_deeppcb_unsupervised_boxes(tmp_path):
    root = make_deeppcb(tmp_path / "deeppcb")
    sp = deeppcb(root, seed=0)
    assert len(sp.train) == 7 and all(s.label == 0 and s.image.endswith("_temp.jpg") for s in sp.train)
    normals = [s for s in sp.test if s.label == 0]
    defects = [s for s in sp.test if s.label == 1]
    assert len(normals) == 2 and len(defects) == 9
    d = defects[0]
    assert d.boxes == ((2, 3, 6, 9), (20, 20, 30, 25)) and d.meta["defect_types"] == ("open", "pin_hole")
    m = d.load_mask()
    assert m.shape == (40, 40) and m.sum() == 5 * 7 + 11 * 6 and m[3, 2] and m[9, 6] and not m[10, 6]
    held = deeppcb(root, seed=0, test_pairs="held_out")
    held_ids = {Path(s.image).name.replace("_temp.jpg", "") for s in held.test if s.label == 0}
    assert {Path(s.image).name.replace("_test.jpg", "") for s in held.test if s.label == 1} == held_ids
    assert len(deeppcb(root, groups=("group100",)).test) == 1 + 4


def test_deeppcb_classification_keeps_pairs_together(tmp_path):
    root = make_deeppcb(tmp_path / "deeppcb")
    sp = deeppcb(root / "PCBData", task="classification", seed=2)
    assert sp.class_names == ("normal", "defective")
    pid = lambda s: Path(s.image).name.split("_")[0]   # noqa: E731
    assert {pid(s) for s in sp.train}.isdisjoint({pid(s) for s in sp.test})
    assert Counter(s.class_id for s in sp.train) == {0: 7, 1: 7}
    assert all(s.boxes for s in sp.train if s.class_id == 1)


def test_deeppcb_missing_and_bad_annotation(tmp_path):
    root = make_deeppcb(tmp_path / "deeppcb")
    ann = root / "PCBData" / "group200" / "200_not" / "200003.txt"
    ann.write_text("1 2 3\n")
    with pytest.raises(DataError, match=r"200003\.txt line 1"):
        deeppcb(root)
    ann.unlink()
    with pytest.raises(DataError, match=r"200003_test\.jpg.*expected .*200003\.txt"):
        deeppcb(root)
    with pytest.raises(DataError, match="no DeepPCB group folders"):
        deeppcb(tmp_path)


# ------------------------------------------------------------------ few-shot, multi-class, open_dataset

def test_few_shot_is_seeded_per_category(tmp_path):
    make_mvtec(tmp_path / "mv" / "a", n_train=10)
    make_mvtec(tmp_path / "mv" / "b", n_train=10)
    sp = mvtec(tmp_path / "mv")
    k2 = few_shot(sp, 2, seed=0)
    assert Counter(s.category for s in k2.train) == {"a": 2, "b": 2}
    assert k2.test == sp.test and k2.name.endswith("2shot")
    assert [s.image for s in few_shot(sp, 2, seed=0).train] == [s.image for s in k2.train]
    assert len({tuple(s.image for s in few_shot(sp, 2, seed=k).train) for k in range(6)}) > 1
    # a category's shots do not depend on the other categories present
    only_a = few_shot(mvtec(tmp_path / "mv" / "a"), 2, seed=0)
    assert [s.image for s in only_a.train] == [s.image for s in k2.train if s.category == "a"]
    with pytest.raises(DataError, match="fewer than k=11"):
        few_shot(sp, 11)
    with pytest.raises(ValueError):
        few_shot(sp, 0)


def test_multiclass_keeps_categories_and_rejects_duplicates(tmp_path):
    a = mvtec(make_mvtec(tmp_path / "a"))
    b = mvtec(make_mvtec(tmp_path / "b"))
    m = multiclass([a, b])
    assert m.categories == ["a", "b"] and len(m.train) == 8 and len(m.test) == 14
    assert m.category("a").test == a.test
    with pytest.raises(DataError, match="'a'"):
        multiclass([a, a])
    nameless = Split("x", [s.with_(category="") for s in a.train], [])
    assert multiclass([nameless, b]).categories == ["b", "x"]


def test_open_dataset_specs_and_errors(tmp_path):
    root = make_mvtec(tmp_path / "widget", n_train=6)
    assert len(open_dataset(f"mvtec:{root}").train) == 6
    assert len(open_dataset(str(root)).train) == 6                     # bare MVTec folder
    assert len(open_dataset(f"mvtec:{root}?shots=2&seed=1").train) == 2
    assert len(open_dataset(f"mvtec:{root}", shots="3").train) == 3     # option strings are coerced
    mt = make_mtsd(tmp_path / "magnetic_tile")
    both = open_dataset(f"mvtec:{root}, mtsd:{mt}?task=classification")
    assert both.categories == ["magnetic_tile", "widget"]
    assert open_dataset("demo?categories=grass&n_train=2&n_test=3&size=32").categories == ["grass"]
    missing = tmp_path / "absent"
    with pytest.raises(DataError) as e:
        open_dataset(f"mvtec:{missing}")
    assert f"mvtec:{missing}" in str(e.value) and str(missing) in str(e.value)
    with pytest.raises(DataError, match="unknown dataset kind 'cifar'"):
        open_dataset("cifar:/x")
    with pytest.raises(DataError, match=r"mtsd:.*option\(s\) bogus not understood"):
        open_dataset(f"mtsd:{mt}?bogus=1")
    with pytest.raises(DataError, match=r"train_fraction='lots' is not a valid float"):
        open_dataset(f"mtsd:{mt}?train_fraction=lots")
    with pytest.raises(DataError, match="needs a path"):
        open_dataset("mtsd:")
    with pytest.raises(DataError, match="empty dataset spec"):
        open_dataset("  ")


def test_an_image_is_never_its_own_mask(tmp_path):
    write_img(tmp_path / "bad" / "x.png")
    for i in range(2):
        write_img(tmp_path / "good" / f"{i}.png")
    with pytest.raises(DataError, match=r"x\.png: anomalous image has no mask"):
        folder_dataset(tmp_path / "good", tmp_path / "bad", tmp_path / "bad")


def test_onen_input_setting_option_relabels_a_classification_split(tmp_path):
    """`mtsd:...?task=classification&setting=B` gives OneN's table-1 setting B (free vs defective);
    the setting needs the classification task."""
    from distillad.data import open_dataset
    from distillad.errors import DataError
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for cls in ("MT_Free", "MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven"):
        d = tmp_path / cls / "Imgs"
        d.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(d / f"{cls}_{i}.jpg")
            Image.fromarray(np.zeros((20, 30), np.uint8) + (0 if cls == "MT_Free" else 255)).save(d / f"{cls}_{i}.png")
    b = open_dataset(f"mtsd:{tmp_path}?task=classification&setting=B")
    assert b.class_names == ("free", "defective")
    assert {s.class_id for s in b.train + b.test} == {0, 1}
    g = open_dataset(f"mtsd:{tmp_path}?task=classification&setting=STD+G")  # "+" survives the query string
    assert g.class_names == ("free", "blowhole", "break", "crack", "fray", "uneven")
    with pytest.raises(DataError, match="needs task=classification"):
        open_dataset(f"mtsd:{tmp_path}?setting=B")
