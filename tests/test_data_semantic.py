"""Semantic sets: IDX files, ImageFolder trees, arrays; one-vs-rest and the dual-student splits A-D."""
import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distillad.data import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES, fashion_mnist, from_arrays, image_folder,
                            normal_vs_rest, one_vs_rest, open_dataset, semantic_split)
from distillad.data.semantic import read_idx
from distillad.errors import DataError


def write_idx(path: Path, arr: np.ndarray, gz=True):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_fmnist(root: Path, n_train_per=3, n_test_per=2):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train_per), ("t10k", n_test_per)):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 256, (len(labels), 28, 28))
        images[:, 0, 0] = labels          # lets the test check images and labels stay aligned
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def test_fashion_mnist_idx_reading(tmp_path):
    d = fashion_mnist(make_fmnist(tmp_path / "fm"))
    assert d.class_names == FASHION_MNIST_CLASSES
    assert d.train_images.shape == (30, 28, 28) and d.test_images.shape == (20, 28, 28)
    assert np.all(d.train_images[:, 0, 0] == d.train_labels)
    # plain (not gzipped) IDX works too
    raw = tmp_path / "raw.idx"
    write_idx(raw, np.arange(6).reshape(2, 3), gz=False)
    np.testing.assert_array_equal(read_idx(raw), np.arange(6).reshape(2, 3))


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 28, 28) + b"\x00" * 10))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: IDX header says"):
        read_idx(bad)
    bad.write_bytes(b"garbage that is not gzip")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        read_idx(bad)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz not found"):
        fashion_mnist(_partial(tmp_path / "fm3"))


def _partial(root: Path) -> Path:
    make_fmnist(root)
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    return root


def test_one_vs_rest_uses_official_test_split(tmp_path):
    d = fashion_mnist(make_fmnist(tmp_path / "fm"))
    sp = one_vs_rest(d, "Trouser")
    assert sp.name == "fmnist/1" and len(sp.train) == 3
    assert all(s.class_id == 1 and s.label == 0 and s.mask is None for s in sp.train)
    assert len(sp.test) == 20 and Counter(s.label for s in sp.test) == {0: 2, 1: 18}
    assert all(s.load_image()[0, 0, 0] == s.class_id for s in sp.test)
    assert {s.defect_type for s in sp.test if s.label} == set(FASHION_MNIST_CLASSES) - {"Trouser"}
    assert sp.test[0].load_image().shape == (28, 28, 3)
    assert one_vs_rest(d, 1).name == one_vs_rest(d, "1").name == "fmnist/1"
    with pytest.raises(DataError, match="unknown class 'Hat'"):
        one_vs_rest(d, "Hat")


@pytest.mark.parametrize("which,normal", [("A", {0, 1, 2, 3, 4}), ("B", {5, 6, 7, 8, 9}),
                                          ("C", {0, 2, 4, 6, 8}), ("D", {1, 3, 5, 7, 9})])
def test_dual_student_splits_for_ten_classes(tmp_path, which, normal):
    d = fashion_mnist(make_fmnist(tmp_path / "fm"))
    sp = semantic_split(d, which)
    assert {s.class_id for s in sp.train} == normal
    assert all((s.label == 0) == (s.class_id in normal) for s in sp.test)
    assert len(sp.test) == 20 and sp.categories == ["fmnist"]
    # CIFAR-10 (ten classes, e.g. as arrays) uses the same index lists
    rng = np.random.default_rng(1)
    cifar = from_arrays(rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), np.repeat(np.arange(10), 2),
                        rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), np.arange(10), CIFAR10_CLASSES, "cifar10")
    assert {cifar.class_names[s.class_id] for s in semantic_split(cifar, which).train} == \
        {CIFAR10_CLASSES[i] for i in normal}


def test_splits_for_twenty_classes_and_view():
    y = np.arange(20)
    x = np.zeros((20, 4, 4), np.uint8)
    c100 = from_arrays(x, y, x, y, name="cifar100")
    assert {s.class_id for s in semantic_split(c100, "B").train} == set(range(10, 20))
    assert {s.class_id for s in semantic_split(c100, "D").train} == set(range(1, 20, 2))
    y6 = np.arange(6)
    view = from_arrays(x[:6], y6, x[:6], y6, ("buildings", "forest", "glacier", "mountain", "sea", "street"), "view")
    assert {view.class_names[s.class_id] for s in semantic_split(view, "C").train} == {"buildings", "glacier", "sea"}
    seven = from_arrays(x[:7], np.arange(7), x[:7], np.arange(7))
    with pytest.raises(DataError, match="7 classes"):
        semantic_split(seven, "A")
    with pytest.raises(ValueError):
        semantic_split(c100, "E")


def test_per_class_subsampling_is_seeded(tmp_path):
    d = fashion_mnist(make_fmnist(tmp_path / "fm", n_train_per=6, n_test_per=4))
    a = semantic_split(d, "A", train_per_class=2, test_per_class=1, seed=0)
    assert Counter(s.class_id for s in a.train) == {i: 2 for i in range(5)} and len(a.test) == 10
    b = semantic_split(d, "A", train_per_class=2, test_per_class=1, seed=0)
    assert [s.meta["index"] for s in a.train] == [s.meta["index"] for s in b.train]
    other = {tuple(s.meta["index"] for s in semantic_split(d, "A", train_per_class=2, seed=k).train) for k in range(4)}
    assert len(other) > 1


def test_image_folder_tree(tmp_path):
    root = tmp_path / "animals"
    for c in ("cat", "dog", "owl"):
        for i in range(4):
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 6, 3), i, np.uint8)).save(root / c / f"{i}.png")
    d = image_folder(root, train_fraction=0.5, seed=0)
    assert d.class_names == ("cat", "dog", "owl") and len(d.train_images) == 6 and len(d.test_images) == 6
    sp = one_vs_rest(d, "dog")
    assert len(sp.train) == 2 and all(isinstance(s.image, str) for s in sp.train)
    assert sp.train[0].load_image().shape == (6, 6, 3)
    # with train/ and test/ the given parts are used; an empty class folder is an error naming it
    for part in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "tt" / part / c).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "tt" / part / c / "x.png")
    assert len(image_folder(tmp_path / "tt").train_images) == 2
    assert open_dataset(f"imagefolder:{tmp_path / 'tt'}?normal=a").name == "tt/0"
    (tmp_path / "tt" / "test" / "b" / "x.png").unlink()
    with pytest.raises(DataError, match=r"tt.test.b: class folder contains no images"):
        image_folder(tmp_path / "tt")


def test_open_dataset_semantic_specs(tmp_path):
    root = make_fmnist(tmp_path / "fm")
    sp = open_dataset(f"fmnist:{root}?split=C")
    assert sp.name == "fmnist/C" and {s.class_id for s in sp.train} == {0, 2, 4, 6, 8}
    assert open_dataset(f"fmnist:{root}?normal=Bag").name == "fmnist/8"
    assert {s.class_id for s in open_dataset(f"fmnist:{root}?normal=1;3").train} == {1, 3}
    assert normal_vs_rest(fashion_mnist(root), [1, 3]).name == "fmnist/1-3"
    with pytest.raises(DataError, match=r"fmnist:.*normal=<class>.*split=A\|B\|C\|D"):
        open_dataset(f"fmnist:{root}")
    with pytest.raises(DataError, match="Fashion-MNIST folder not found"):
        open_dataset(f"fmnist:{tmp_path / 'nope'}?split=A")


def test_arrays_validation():
    with pytest.raises(DataError, match="3 images but 2 labels"):
        from_arrays(np.zeros((3, 4, 4)), [0, 1], np.zeros((1, 4, 4)), [0])
    with pytest.raises(DataError, match="N x H x W"):
        from_arrays(np.zeros((3, 4)), [0, 1, 0], np.zeros((1, 4, 4)), [0])
