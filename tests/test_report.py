"""distillad.report: overlays, figures, markdown tables, HTML escaping."""
import numpy as np
import pytest
from PIL import Image

from distillad.errors import DataError
from distillad.report import (bench_table, build_html, display_range, histogram_png, mask_contour,
                              metrics_markdown, overlay, pro_png, roc_png, save_overlay)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _jet(v):
    import matplotlib
    return np.array(matplotlib.colormaps["jet"](v)[:3]) * 255


def test_overlay_blends_the_colour_of_each_value_in_the_fixed_range():
    img = np.full((8, 10, 3), 100, np.uint8)
    amap = np.zeros((8, 10), np.float32)
    amap[2, 3] = 0.5
    amap[5, 5] = 7.0  # above vmax: clipped to the top colour
    out = overlay(img, amap, vmin=0.0, vmax=1.0, alpha=0.5)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[0, 0], 0.5 * 100 + 0.5 * _jet(0.0), atol=1)
    np.testing.assert_allclose(out[2, 3], 0.5 * 100 + 0.5 * _jet(0.5), atol=1)
    np.testing.assert_allclose(out[5, 5], 0.5 * 100 + 0.5 * _jet(1.0), atol=1)


def test_fixed_range_keeps_a_quiet_map_quiet_but_per_image_range_does_not():
    rng = np.random.default_rng(0)
    img = np.zeros((16, 16, 3), np.uint8)
    quiet = rng.random((16, 16)).astype(np.float32) * 0.01  # a normal image: tiny noise
    fixed = overlay(img, quiet, vmin=0.0, vmax=1.0, alpha=1.0)
    own = overlay(img, quiet, alpha=1.0)  # per-image min-max
    bottom = np.round(_jet(0.0)).astype(int)
    assert np.abs(fixed.astype(int) - bottom).max() <= 12  # all near the bottom colour
    assert np.abs(own.astype(int) - bottom).max() > 100   # stretched to the full scale


def test_overlay_draws_the_mask_contour_only_on_its_boundary():
    img = np.zeros((30, 30, 3), np.uint8)
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True
    out = overlay(img, np.zeros((30, 30)), mask, vmin=0, vmax=1)
    white = (out == 255).all(axis=2)
    assert white[10, 15] and white[19, 15] and white[15, 10] and white[15, 19]
    assert not white[15, 15] and not white[5, 5]  # interior and outside untouched
    assert white.sum() == mask_contour(mask).sum() == 36


def test_overlay_refuses_maps_of_another_size():
    with pytest.raises(DataError, match="does not match"):
        overlay(np.zeros((8, 10, 3), np.uint8), np.zeros((10, 8)))
    with pytest.raises(DataError, match="mask"):
        overlay(np.zeros((8, 10, 3), np.uint8), np.zeros((8, 10)), np.zeros((8, 9), bool))


def test_save_overlay_writes_a_readable_png(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (12, 9, 3), dtype=np.uint8)
    amap = np.linspace(0, 1, 12 * 9).reshape(12, 9)
    path = save_overlay(tmp_path / "sub" / "x.png", img, amap, vmin=0, vmax=1)
    with Image.open(path) as im:
        arr = np.asarray(im)
    np.testing.assert_array_equal(arr, overlay(img, amap, vmin=0, vmax=1))
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]


def test_display_range_from_normal_median_to_overall_max():
    normal = [np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[4.0]])]
    anomalous = [np.array([[9.0, 0.5]])]
    assert display_range(normal, normal + anomalous) == (2.0, 9.0)
    assert display_range([], anomalous) == (0.5, 9.0)
    lo, hi = display_range([np.ones((2, 2))], [np.ones((2, 2))])
    assert hi > lo


def test_figures_are_png():
    fpr = np.linspace(0, 1, 11)
    assert roc_png([("all", fpr, fpr ** 0.5, 0.8)], "ROC").startswith(PNG_MAGIC)
    assert pro_png(fpr, fpr ** 0.3, limit=0.3, aupro=float("nan")).startswith(PNG_MAGIC)
    assert histogram_png(np.array([0.1, 0.2]), np.array([0.8]), threshold=0.5).startswith(PNG_MAGIC)
    assert histogram_png(np.array([0.1]), np.array([]), threshold=None).startswith(PNG_MAGIC)


def _result(model, dataset, auroc, per_category=None, classification=None):
    r = {"model": model, "teacher": {"name": "resnet18", "weights": "random"}, "dataset": dataset,
         "n_test": 4, "n_test_normal": 2, "n_test_anomalous": 2,
         "metrics": {"image_auroc": auroc, "pixel_auroc": None, "aupro_30": 0.5},
         "speed": {"latency_ms_b1": 12.345, "throughput_ips_b8": 99.0, "peak_rss_mb": 512.25, "n_timed": 4},
         "notes": ["pixel_auroc is undefined: because"]}
    if per_category:
        r["per_category"] = per_category
    if classification:
        r["classification"] = classification
    return r


def test_bench_table_lists_models_side_by_side():
    a = _result("l2bt", "mvtec:hazel|nut", 0.9)
    b = _result("hkt", "multi", 0.7, per_category={"x": {"image_auroc": 0.6}, "y": {"image_auroc": 1.0},
                                                   "mean": {"image_auroc": 0.8, "aupro_30": 0.25}},
                classification={"accuracy": 0.75})
    md = bench_table([a, b])
    lines = md.splitlines()
    assert lines[0].startswith("| model | teacher | data | image_auroc | pixel_auroc | aupro_30 | accuracy |")
    row_a = next(line for line in lines if line.startswith("| l2bt"))
    row_b = next(line for line in lines if line.startswith("| hkt *"))
    assert "mvtec:hazel\\|nut" in row_a  # pipes in names escaped
    assert "| 0.9000 | n/a | 0.5000 | n/a | 12.35 | 99.00 | 512.2 |" in row_a
    assert "| 0.8000 | n/a | 0.2500 | 0.7500 |" in row_b  # category mean used, marked with *
    assert "mean over categories" in md


def test_metrics_markdown_shows_categories_speed_and_notes():
    r = _result("l2bt", "d", 0.9, per_category={"x": {"image_auroc": 0.6}, "y": {"image_auroc": 1.0},
                                               "mean": {"image_auroc": 0.8}})
    md = metrics_markdown(r)
    assert "| category x | 0.6000 |" in md and "| mean of categories | 0.8000 |" in md
    assert "12.35 ms per image" in md and "pixel_auroc is undefined: because" in md
    assert "n/a" in md


def test_build_html_escapes_every_user_string():
    r = _result("<b>m</b>", "<i>d</i>", 0.5)
    r["notes"] = ["<img src=x onerror=alert(1)>"]
    cases = [("heading", "explanation", [{"name": "a<b>.png", "score": 1.0, "category": "c&d",
                                          "defect_type": "<x>", "png": PNG_MAGIC}])]
    page = build_html(r, [("fig", PNG_MAGIC)], cases, {"vmin": 0.0, "vmax": 1.0, "how": "<how>"})
    for raw in ("<b>m</b>", "<i>d</i>", "<img src=x", "a<b>.png", "c&d", "<x>", "<how>"):
        assert raw not in page
    assert "a&lt;b&gt;.png" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("data:image/png;base64,") == 2


def test_bench_table_shows_parameters_and_flops_when_a_model_counts_them():
    from distillad.report import bench_table
    base = {"model": "hkt", "dataset": "d", "metrics": {"image_auroc": 0.9}, "speed": {}}
    table = bench_table([dict(base, complexity={"params_teacher": 2_000_000, "params_student": 690_000,
                                                "flops_inference": 40_600_000_000}),
                         dict(base, model="knn")])
    header, _, hkt_row, knn_row = table.splitlines()[:4]
    assert "params (M)" in header and "GFLOPs/img" in header
    assert "| 2.69 | 40.60 |" in hkt_row
    assert knn_row.count("n/a") >= 2
