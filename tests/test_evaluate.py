"""distillad.evaluate on tiny in-memory splits with hand-written detectors (no teacher, no data)."""
import json
import re

import numpy as np
import pytest

from distillad import Detector, Prediction
from distillad.data import Sample, Split
from distillad.errors import NotFittedError
from distillad.evaluate import EvaluationError, evaluate, pixel_roc_curve, roc_points

H, W = 20, 28  # not square, so a transposed map is caught


def _image(rng, square=None):
    img = rng.integers(0, 100, size=(H, W, 3), dtype=np.uint8)
    if square is not None:
        y, x, s = square
        img[y : y + s, x : x + s] = 255
    return img


def make_split(categories=("a",), n_normal=3, n_anom=3, seed=0, mask_kind="mask", name="tiny"):
    """Normal images are dark noise; anomalous ones hold a bright square (the defect) whose
    mask is the ground truth. mask_kind: "mask" | "boxes" | "none" (semantic: no pixel GT)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in categories:
        for i in range(3):
            train.append(Sample(_image(rng), category=c, meta={"name": f"{c}/train_{i}.png"}))
        for i in range(n_normal):
            test.append(Sample(_image(rng), category=c, meta={"name": f"{c}/good_{i}.png"}))
        for i in range(n_anom):
            y, x, s = int(rng.integers(0, H - 6)), int(rng.integers(0, W - 6)), int(rng.integers(3, 6))
            mask = np.zeros((H, W), bool)
            mask[y : y + s, x : x + s] = True
            kw = {"mask": mask} if mask_kind == "mask" else \
                {"boxes": ((x, y, x + s - 1, y + s - 1),)} if mask_kind == "boxes" else {}
            test.append(Sample(_image(rng, (y, x, s)), label=1, defect_type="spot", category=c, class_id=1,
                               meta={"name": f"{c}/spot_{i}.png"}, **kw))
    return Split(name, train, test, class_names=("good", "spot"))


class BrightDetector(Detector):
    """Perfect on make_split: the map is 1 where a pixel is bright (the defect), else 0."""

    name = "test_bright"

    def _fit(self, train, *, checkpoint_dir, resume, progress):
        pass

    def _predict_batch(self, images):
        maps = [(im.min(axis=2) > 200).astype(np.float32) for im in images]
        return Prediction(np.array([m.max() + 0.01 * m.sum() for m in maps], np.float32), maps)

    def _state_tensors(self):
        return {}

    def _load_state(self, tensors, extra):
        pass


class NoiseDetector(BrightDetector):
    name = "test_noise"

    def _predict_batch(self, images):
        # noise seeded by each image's content: the same image gets the same map in any batch
        maps = [np.random.default_rng(int(im.sum())).random(im.shape[:2]).astype(np.float32) for im in images]
        return Prediction(np.array([m.mean() for m in maps], np.float32), maps)


class TransposingDetector(BrightDetector):
    """Returns a transposed map for images whose top-left pixel value is `bad_pixel`."""
    name = "test_transposing"

    def __init__(self, bad_pixel: int = -1):
        self.bad_pixel = bad_pixel

    def _predict_batch(self, images):
        p = super()._predict_batch(images)
        p.maps = [m.T if int(im[0, 0, 0]) == self.bad_pixel else m for m, im in zip(p.maps, images)]
        return p


class ClassifyingDetector(BrightDetector):
    name = "test_classifying"
    classifies = True

    def _predict_batch(self, images):
        p = super()._predict_batch(images)
        p.labels = (p.scores > 0.5).astype(int)
        p.labels[0] = 1 - p.labels[0]  # one deliberate mistake per batch
        return p


def read_json(path):
    return json.loads(path.read_text())


def test_perfect_detector_writes_metrics_and_reports(tmp_path):
    split = make_split()
    det = BrightDetector().fit(split.train, progress=False)
    out = tmp_path / "eval"
    res = evaluate(det, split, out, speed=False, progress=False)
    saved = read_json(out / "metrics.json")
    assert saved == res
    assert saved["metrics"]["image_auroc"] == pytest.approx(1.0)
    assert saved["metrics"]["pixel_auroc"] == pytest.approx(1.0)
    assert saved["metrics"]["aupro_30"] == pytest.approx(1.0, abs=1e-6)
    assert saved["model"] == "test_bright" and saved["dataset"] == "tiny"
    assert saved["n_test"] == 6 and saved["n_test_normal"] == 3 and saved["n_test_anomalous"] == 3
    assert "per_category" not in saved  # one category only
    assert saved["fit_info"]["n_train"] == 3 and saved["speed"] is None
    md = (out / "metrics.md").read_text()
    assert "image_auroc" in md and "1.0000" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 + 5  # 4 figures + overlays (3 anomalous, 2+ normal)
    for s in split.test:
        if s.label == 1:
            assert s.name in html  # every anomalous image appears among the best/worst cases
    # perfect detector: all anomalous images flagged, the normal ones shown are not
    assert html.count("· flagged (score &gt; threshold_)") == 6  # 3 top + 3 lowest anomalous
    assert html.count("· not flagged") == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_report_escapes_file_names(tmp_path):
    split = make_split()
    split.test[-1] = split.test[-1].with_(meta={"name": "<script>alert(1)</script>&.png"})
    det = BrightDetector().fit(split.train, progress=False)
    evaluate(det, split, tmp_path, speed=False, progress=False)
    html = (tmp_path / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;.png" in html


def test_per_category_results_and_mean(tmp_path):
    split = make_split(categories=("bottle", "cable"))
    det = NoiseDetector().fit(split.train, progress=False)
    res = evaluate(det, split, tmp_path, speed=False, progress=False)
    per = res["per_category"]
    assert set(per) == {"bottle", "cable", "mean"}
    for key in ("image_auroc", "pixel_auroc", "aupro_30"):
        assert per["mean"][key] == pytest.approx((per["bottle"][key] + per["cable"][key]) / 2)
    # the per-category numbers are those of evaluating each category alone
    alone = evaluate(det, split.category("cable"), speed=False, report=False, progress=False)
    assert per["cable"]["image_auroc"] == pytest.approx(alone["metrics"]["image_auroc"])
    assert per["cable"]["pixel_auroc"] == pytest.approx(alone["metrics"]["pixel_auroc"])
    md = (tmp_path / "metrics.md").read_text()
    assert "category bottle" in md and "category cable" in md and "mean of categories" in md


def test_wrong_shape_map_names_the_image_and_writes_nothing(tmp_path):
    split = make_split()
    img = split.test[4].load_image().copy()
    img[0, 0] = 150  # a value no other test image has there (noise < 100, defects 255)
    victim = split.test[4] = split.test[4].with_(image=img)
    det = TransposingDetector(bad_pixel=150).fit(split.train, progress=False)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"old": true}\n')
    with pytest.raises(EvaluationError, match=re.escape(victim.name)):
        evaluate(det, split, out, speed=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert read_json(out / "metrics.json") == {"old": True}  # the previous result is untouched


def test_failure_while_rendering_leaves_no_partial_output(tmp_path, monkeypatch):
    import distillad.evaluate as ev

    def boom(*a, **k):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(ev, "_render_html", boom)
    split = make_split()
    det = BrightDetector().fit(split.train, progress=False)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate(det, split, tmp_path / "eval", speed=False, progress=False)
    assert not (tmp_path / "eval").exists() or not list((tmp_path / "eval").iterdir())


def test_anomalies_without_masks_skip_pixel_metrics(tmp_path):
    split = make_split(mask_kind="none")
    det = BrightDetector().fit(split.train, progress=False)
    res = evaluate(det, split, tmp_path, speed=False, progress=False)
    assert res["metrics"]["image_auroc"] == pytest.approx(1.0)
    assert not any(k.startswith(("pixel_", "aupro")) for k in res["metrics"])
    assert res["pixel_ground_truth"] == "none"
    assert any("pixel metrics skipped" in n for n in res["notes"])
    assert "pixel metrics skipped" in (tmp_path / "metrics.md").read_text()


def test_some_anomalies_without_masks_are_left_out_of_pixel_metrics():
    split = make_split()
    split.test[-1] = split.test[-1].with_(mask=None)
    det = BrightDetector().fit(split.train, progress=False)
    res = evaluate(det, split, speed=False, report=False, progress=False)
    assert res["metrics"]["pixel_auroc"] == pytest.approx(1.0)
    assert any("left out of the pixel metrics (5 images used)" in n for n in res["notes"])


def test_box_ground_truth_is_reported_as_box_level(tmp_path):
    split = make_split(mask_kind="boxes")
    det = BrightDetector().fit(split.train, progress=False)
    res = evaluate(det, split, tmp_path, speed=False, progress=False)
    assert res["pixel_ground_truth"].startswith("boxes")
    assert res["metrics"]["pixel_auroc"] == pytest.approx(1.0)  # boxes == squares here
    assert any("box-level" in n for n in res["notes"])
    assert "box-level" in (tmp_path / "report.html").read_text()


def test_single_class_test_set_gives_null_with_reason(tmp_path):
    split = make_split(n_anom=0)
    det = BrightDetector().fit(split.train, progress=False)
    res = evaluate(det, split, tmp_path, speed=False, progress=False)
    assert res["metrics"]["image_auroc"] is None
    assert any("image_auroc is undefined" in n and "all normal" in n for n in res["notes"])
    assert read_json(tmp_path / "metrics.json")["metrics"]["image_auroc"] is None
    assert "n/a" in (tmp_path / "metrics.md").read_text()


def test_classification_metrics_when_detector_classifies():
    split = make_split(n_normal=3, n_anom=3)
    det = ClassifyingDetector().fit(split.train, progress=False)
    res = evaluate(det, split, speed=False, report=False, progress=False, batch_size=8)
    # one batch of 6, the first label flipped: 5 of 6 right
    assert res["classification"]["accuracy"] == pytest.approx(5 / 6)
    assert "classification" not in evaluate(BrightDetector().fit(split.train, progress=False), split,
                                            speed=False, report=False, progress=False)


def test_speed_fields(tmp_path):
    split = make_split()
    det = BrightDetector().fit(split.train, progress=False)
    res = evaluate(det, split.test, tmp_path, speed=True, report=False, progress=False, max_speed_images=3)
    s = res["speed"]
    assert s["latency_ms_b1"] > 0 and s["throughput_ips_b8"] > 0
    assert s["n_timed_b1"] == 3 and s["n_timed_b8"] == 8
    assert s["peak_rss_mb"] > 0 and "peak RSS" in s["memory_measure"]
    assert "end to end" in s["what"] and "restoration" in s["what"]
    assert res["dataset"] == "<test samples>"
    assert "ms per image" in (tmp_path / "metrics.md").read_text()


def test_unfitted_detector_is_refused():
    with pytest.raises(NotFittedError):
        evaluate(BrightDetector(), make_split(), speed=False, report=False, progress=False)


def test_roc_points_are_exact_roc_vertices():
    fpr, tpr = roc_points(np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.9, 0.5, 0.5, 0.2]))
    # thresholds 0.9 | 0.5 (one normal, one anomalous tied) | 0.2 | 0.1
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])


def test_pixel_roc_curve_matches_exact_auc():
    from distillad.metrics import pixel_metrics

    rng = np.random.default_rng(1)
    masks = [rng.random((10, 12)) > 0.8 for _ in range(3)]
    maps = [m * 0.5 + rng.random(m.shape) for m in masks]
    fpr, tpr = pixel_roc_curve(masks, maps, bins=4000)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    exact = pixel_metrics(masks, maps)["pixel_auroc"]
    assert np.trapezoid(tpr, fpr) == pytest.approx(exact, abs=2e-3)


def test_empty_masks_give_null_pixel_metrics_with_reason():
    split = make_split()
    split.test[3:] = [s.with_(mask=np.zeros((H, W), bool)) for s in split.test[3:]]
    det = BrightDetector().fit(split.train, progress=False)
    res = evaluate(det, split, speed=False, report=False, progress=False)
    assert res["metrics"]["image_auroc"] == pytest.approx(1.0)
    assert res["metrics"]["pixel_auroc"] is None
    assert any(n.startswith("pixel_auroc is undefined: the ground-truth masks hold no anomalous pixel") for n in res["notes"])


def test_output_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    split = make_split(n_normal=2, n_anom=2)
    det = BrightDetector().fit(split.train, progress=False)
    evaluate(det, split, tmp_path, speed=False, progress=False)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "metrics.md", "report.html"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
