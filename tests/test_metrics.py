"""distillad.metrics: hand-computed cases, agreement with sklearn and with a brute-force PRO."""
import logging
import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from distillad.errors import DataError
from distillad.metrics import (aupro, aupro_quartiles, classification_metrics, compute_metrics, image_metrics,
                               limit_key, pixel_metrics, pro_curve, robustness)

ALL_KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
            "aupro_30", "aupro_10", "aupro_5", "aupro_1",
            *(f"aupro_30_q{i}" for i in range(1, 5)), *(f"aupro_5_q{i}" for i in range(1, 5)), "rho_30", "rho_5")


def _blobs(rng, shape=(24, 32), n=3):
    m = np.zeros(shape, bool)
    for _ in range(n):
        r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 5)
        m[r:r + rng.integers(1, 4), c:c + rng.integers(1, 5)] = True
    return m


def _test_set(rng, n_anom=4, n_norm=3):
    masks = [_blobs(rng) for _ in range(n_anom)] + [np.zeros((20, 28), bool) for _ in range(n_norm)]
    labels = [1] * n_anom + [0] * n_norm
    return labels, masks


# --------------------------------------------------------------------------- hand-computed cases
def test_perfect_map_scores_one_everywhere():
    labels, masks = _test_set(np.random.default_rng(0))
    maps = [m.astype(np.float32) for m in masks]
    scores = [float(m.any()) for m in masks]
    out = compute_metrics(labels, scores, masks, maps)
    assert set(out) == set(ALL_KEYS)
    for k in ALL_KEYS:
        assert out[k] == pytest.approx(1.0, abs=1e-12), k


def test_constant_map_auroc_half_and_aupro_half_limit():
    labels, masks = _test_set(np.random.default_rng(1))
    maps = [np.full(m.shape, 0.3, np.float32) for m in masks]
    out = compute_metrics(labels, [0.7] * len(masks), masks, maps)
    assert out["image_auroc"] == 0.5 and out["pixel_auroc"] == 0.5
    # one tie group: the curve is the straight line (0, 0) -> (1, 1), so AUPRO@L = (L^2 / 2) / L
    for lim in (0.3, 0.1, 0.05, 0.01):
        assert out[f"aupro_{limit_key(lim)}"] == pytest.approx(lim / 2)
    # AP of a constant score = the positive rate; F1-max = F1 of "everything positive"
    pos = sum(int(m.sum()) for m in masks)
    tot = sum(m.size for m in masks)
    assert out["pixel_ap"] == pytest.approx(pos / tot)
    assert out["pixel_f1_max"] == pytest.approx(2 * pos / (pos + tot))


def test_inverted_map_auroc_zero():
    labels, masks = _test_set(np.random.default_rng(2))
    maps = [1.0 - m.astype(np.float32) for m in masks]
    assert pixel_metrics(masks, maps)["pixel_auroc"] == 0.0
    assert image_metrics([0, 0, 1, 1], [4.0, 3.0, 2.0, 1.0])["image_auroc"] == 0.0
    assert aupro(masks, maps)["aupro_30"] == 0.0


def test_two_region_aupro_by_hand():
    # Image A (3 x 4, anomalous): region R1 = two pixels (0,0),(0,1) scored 0.9 and 0.5; region R2 =
    # one pixel (1,3) scored 0.7 (not 8-connected to R1). One normal pixel of A scores 0.6, the
    # other 8 score 0.1. Image B (1 x 11, normal): one pixel 0.8, ten 0.1. Normal pixels: 9 + 11 = 20.
    # Thresholds from the top, (FPR, PRO) with PRO = mean of the two regions' overlaps:
    #   t=0.9: (0, (1/2 + 0)/2 = 0.25)   t=0.8: (1/20 = 0.05, 0.25)   t=0.7: (0.05, (1/2 + 1)/2 = 0.75)
    #   t=0.6: (0.10, 0.75)              t=0.5: (0.10, 1.0)           t=0.1: (1.0, 1.0)
    # Area to 0.3 = 0.05*0.25 + 0.05*0.75 + 0.2*1.0 = 0.25 -> AUPRO@0.3 = 0.25/0.3 = 0.8333...
    # Area to 0.1 = 0.05 -> 0.5; to 0.05 = 0.0125 -> 0.25; to 0.01 = 0.0025 -> 0.25.
    mask_a = np.zeros((3, 4), bool)
    mask_a[0, 0] = mask_a[0, 1] = mask_a[1, 3] = True
    map_a = np.full((3, 4), 0.1, np.float32)
    map_a[0, 0], map_a[0, 1], map_a[1, 3], map_a[2, 2] = 0.9, 0.5, 0.7, 0.6
    mask_b = np.zeros((1, 11), bool)
    map_b = np.full((1, 11), 0.1, np.float32)
    map_b[0, 5] = 0.8
    out = aupro([mask_a, mask_b], [map_a, map_b])
    assert out == pytest.approx({"aupro_30": 0.25 / 0.3, "aupro_10": 0.5, "aupro_5": 0.25, "aupro_1": 0.25})
    fpr, pro = pro_curve([mask_a, mask_b], [map_a, map_b])
    np.testing.assert_allclose(fpr, [0, 0, 0.05, 0.05, 0.1, 0.1, 1.0])
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.75, 0.75, 1.0, 1.0])


def test_tie_between_normal_and_anomalous_is_interpolated_linearly():
    # One region of 2 pixels scored 0.5; of the 20 normal pixels 4 also score 0.5, the rest 0.1.
    # At t=0.5 the curve goes straight from (0, 0) to (4/20 = 0.2, 1). Area to 0.1 = triangle
    # 0.1 * 0.5 / 2 = 0.025 -> AUPRO@0.1 = 0.25; area to 0.3 = 0.2 * 1 / 2 + 0.1 * 1 = 0.2 -> 2/3.
    mask = np.zeros((2, 11), bool)
    mask[0, :2] = True
    amap = np.full((2, 11), 0.1, np.float32)
    amap[0, :6] = 0.5
    out = aupro([mask], [amap], limits=(0.3, 0.1))
    assert out == pytest.approx({"aupro_30": 2 / 3, "aupro_10": 0.25})


def test_quartiles_q1_holds_only_the_small_component():
    # Components of area 1, 4 and 9 (the 2 diagonal pixels of the area-4 blob are 8-connected):
    # quantiles of [1, 4, 9] (linear) are q1 = 2.5, q2 = 4, q3 = 6.5, so Q1 = {1}, Q2 = Q3 = {1, 4},
    # Q4 = all. The small component scores above every normal pixel (0.5), the others below.
    # Q1: PRO 1 from FPR 0 -> AUPRO 1. Q2, Q3: PRO 1/2 up to FPR 1 -> 0.5. Q4: 1/3.
    # rho = w (1 - s), w = (1 + 0.5 + 0.5 + 1/3)/4 = 7/12, s = |1/3 - 1| / 1 = 2/3 -> rho = 7/36.
    mask = np.zeros((12, 12), bool)
    mask[0, 0] = True                      # area 1
    mask[3, 3] = mask[4, 4] = True         # diagonal: one component with the next two pixels
    mask[5, 5] = mask[5, 6] = True         # -> area 4
    mask[8:11, 8:11] = True                # area 9
    amap = np.full(mask.shape, 0.5, np.float32)
    amap[mask] = 0.1
    amap[0, 0] = 0.9
    out = aupro_quartiles([mask, np.zeros((5, 5), bool)], [amap, np.zeros((5, 5), np.float32)])
    for lim in ("30", "5"):
        assert out[f"aupro_{lim}_q1"] == pytest.approx(1.0)
        assert out[f"aupro_{lim}_q2"] == pytest.approx(0.5)
        assert out[f"aupro_{lim}_q3"] == pytest.approx(0.5)
        assert out[f"aupro_{lim}_q4"] == pytest.approx(1 / 3)
        assert out[f"rho_{lim}"] == pytest.approx(7 / 36)


def test_robustness_formula():
    # w = 0.65, s = 0.3 / 0.8 = 0.375 -> rho = 0.65 * 0.625
    assert robustness(0.5, 0.6, 0.7, 0.8) == pytest.approx(0.40625)
    assert robustness(0.8, 0.7, 0.6, 0.5) == pytest.approx(0.40625)  # s uses |Q4 - Q1|
    # L2BT table 2, VisA, "Ours" 1036: Q1..Q4 AUPRO@30% 0.935 0.941 0.946 0.952 -> rho@30% 0.926
    assert robustness(0.935, 0.941, 0.946, 0.952) == pytest.approx(0.926, abs=1e-3)
    assert robustness(1, 1, 1, 1) == 1.0
    assert robustness(0, 0.2, 0.2, 0) == pytest.approx(0.1)  # 0/0 sensitivity taken as 0
    assert math.isnan(robustness(math.nan, 1, 1, 1))


# --------------------------------------------------------------------------- references
def _brute_force_pro(masks, maps):
    """Threshold at every distinct score, count directly (independent of the implementation)."""
    labelled = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    regions = [(i, lab == k) for i, lab in enumerate(labelled) for k in range(1, lab.max() + 1)]
    normal = np.concatenate([a[~m] for a, m in zip(maps, masks)])
    fpr, pro = [0.0], [0.0]
    for t in np.unique(np.concatenate([a.ravel() for a in maps]))[::-1]:
        fpr.append(np.mean(normal >= t))
        pro.append(np.mean([np.mean(maps[i][r] >= t) for i, r in regions]))
    return np.array(fpr + [1.0]), np.array(pro + [1.0])


def _mvtec_trapezoid(x, y, x_max):
    """The MVTec AD evaluation code's integration rule: cut at x_max, interpolate there."""
    correction = 0.0
    if x_max not in x:
        ins = np.searchsorted(x, x_max, side="right")
        y_i = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_i + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    _, masks = _test_set(rng)
    # scores rounded to 2 decimals: many ties, between normal and anomalous pixels too
    maps = [(rng.random(m.shape) * 0.8 + 0.3 * m).round(2).astype(np.float32) for m in masks]
    fpr, pro = _brute_force_pro(masks, maps)
    limits = (0.3, 0.1, 0.05, 0.01, 0.237)
    got = aupro(masks, maps, limits=limits)
    for lim in limits:
        assert got[f"aupro_{limit_key(lim)}"] == pytest.approx(_mvtec_trapezoid(fpr, pro, lim) / lim, abs=1e-9)
    # the partial sort used by `aupro` (top 30 % of normal scores) agrees with the full sort
    full = compute_metrics([1] * len(masks), list(range(len(masks))), masks, maps, quartiles=False)
    for lim in (0.3, 0.1, 0.05, 0.01):
        assert got[f"aupro_{limit_key(lim)}"] == pytest.approx(full[f"aupro_{limit_key(lim)}"], abs=1e-12)
    quart = aupro_quartiles(masks, maps, limits=(0.3, 0.05))
    assert quart["aupro_30_q4"] == pytest.approx(got["aupro_30"], abs=1e-12)
    # the plotted curve is the brute-force curve, same area
    cf, cp = pro_curve(masks, maps)
    assert _mvtec_trapezoid(cf, cp, 0.3) == pytest.approx(_mvtec_trapezoid(fpr, pro, 0.3), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pixel_and_image_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    _, masks = _test_set(rng)
    maps = [(rng.random(m.shape) + 0.4 * m).round(2).astype(np.float32) for m in masks]
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps])
    p, r, _ = precision_recall_curve(y, s)
    got = pixel_metrics(masks, maps)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["pixel_f1_max"] == pytest.approx(np.max(2 * p * r / np.maximum(p + r, 1e-300)), abs=1e-12)
    labels = rng.integers(0, 2, 40)
    scores = rng.normal(size=40).round(1) + labels
    p, r, _ = precision_recall_curve(labels, scores)
    got = image_metrics(labels, scores)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["image_f1_max"] == pytest.approx(np.max(2 * p * r / np.maximum(p + r, 1e-300)), abs=1e-12)


# --------------------------------------------------------------------------- conventions and errors
def test_empty_mask_of_anomalous_image_counts_as_normal_pixels():
    # An anomalous image without mask pixels adds no region; its high scores are false positives.
    mask = np.zeros((4, 5), bool)
    mask[1, 1] = True
    amap = np.zeros((4, 5), np.float32)
    amap[1, 1] = 0.5
    alone = compute_metrics([1, 0], [1.0, 0.0], [mask, np.zeros((4, 5), bool)], [amap, np.zeros((4, 5))])
    assert alone["aupro_30"] == 1.0
    hot = np.full((4, 5), 0.9, np.float32)  # scores above the defect everywhere, empty mask
    out = compute_metrics([1, 0, 1], [1.0, 0.0, 1.0], [mask, np.zeros((4, 5), bool), np.zeros((4, 5), bool)],
                          [amap, np.zeros((4, 5)), hot])
    # 20 of the 59 normal pixels now score above the region: PRO is 0 until FPR 20/59 > 0.3
    assert out["aupro_30"] == 0.0
    assert out["pixel_auroc"] == pytest.approx(1 - 20 / 59)


def test_image_sizes_may_differ_and_mask_may_be_none():
    m1 = np.zeros((3, 4), bool)
    m1[0, 0] = True
    maps = [m1.astype(np.float32), np.zeros((7, 2), np.float32)]
    assert pixel_metrics([m1, None], maps)["pixel_auroc"] == 1.0
    assert pixel_metrics([m1.astype(np.uint8) * 255, None], maps)["pixel_auroc"] == 1.0


def test_shape_mismatch_is_an_error_naming_the_index():
    masks = [np.zeros((4, 4), bool), np.zeros((8, 8), bool)]
    maps = [np.zeros((4, 4)), np.zeros((4, 4))]
    with pytest.raises(DataError, match=r"anomaly map 1 has shape \(4, 4\).*mask has shape \(8, 8\)"):
        pixel_metrics(masks, maps)
    with pytest.raises(DataError, match="anomaly map 1"):
        compute_metrics([0, 1], [0.0, 1.0], masks, maps)
    with pytest.raises(DataError, match="2 masks but 1"):
        aupro(masks, maps[:1])
    with pytest.raises(DataError, match="NaN"):
        pixel_metrics(masks[:1], [np.full((4, 4), np.nan)])
    with pytest.raises(DataError, match="0 .normal. or 1"):
        image_metrics([0, 2], [0.1, 0.2])


def test_degenerate_inputs_give_nan_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="distillad.metrics"):
        out = compute_metrics([0, 0], [0.1, 0.2], [np.zeros((3, 3), bool)] * 2, [np.random.rand(3, 3)] * 2)
    assert set(out) == set(ALL_KEYS)
    assert all(math.isnan(v) for v in out.values())
    assert "only normal images" in caplog.text and "no anomalous pixel" in caplog.text
    out = compute_metrics([1, 1], [0.1, 0.2])
    assert set(out) == {"image_auroc", "image_ap", "image_f1_max"} and math.isnan(out["image_auroc"])


def test_classification_metrics_small_case():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 1, 0]
    out = classification_metrics(y_true, y_pred, ["crack", "fray", "uneven"])
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["accuracy_per_class"] == pytest.approx({"crack": 2 / 3, "fray": 1.0, "uneven": 0.0})
    assert out["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    # class scores -> top-1; names as labels; a class without samples -> NaN
    scores = np.eye(4)[[0, 0, 1, 1]] + 0.1
    out = classification_metrics(["a", "a", "b", "c"], scores, ["a", "b", "c", "d"])
    assert out["accuracy"] == 0.75 and math.isnan(out["accuracy_per_class"]["d"])
    assert classification_metrics([3, 5], [3, 3])["accuracy_per_class"] == {"3": 1.0, "5": 0.0}
    with pytest.raises(DataError, match="0..2"):
        classification_metrics([0, 3], [0, 1], ["a", "b", "c"])


def test_negative_scores_infinities_and_signed_zero_rank_like_floats():
    from distillad.metrics.pixels import float_keys
    rng = np.random.default_rng(5)
    special = np.array([-np.inf, np.inf, -0.0, 0.0, 1e-45, -1e-45, -3.5, 3.5], np.float32)
    x = np.concatenate([special, rng.normal(size=300) * 10.0 ** rng.integers(-30, 30, 300)])
    x = x.astype(np.float32)
    keys = float_keys(x)
    assert np.array_equal(x[np.argsort(keys, kind="stable")], np.sort(x))
    assert keys[2] == keys[3]  # -0.0 ties with +0.0
    # pixel metrics with such scores still agree with sklearn
    masks = [rng.random((6, 50)) > 0.7]
    maps = [rng.choice(special[2:], size=(6, 50)).astype(np.float32)]
    y, s = masks[0].ravel(), maps[0].ravel()
    got = compute_metrics([1], [0.0], masks, maps)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    fpr, pro = _brute_force_pro(masks, maps)
    assert got["aupro_30"] == pytest.approx(_mvtec_trapezoid(fpr, pro, 0.3) / 0.3, abs=1e-12)
    assert aupro(masks, maps)["aupro_5"] == pytest.approx(got["aupro_5"], abs=1e-12)


@pytest.mark.parametrize("margin", [0.02, -0.1, -2.0])  # good estimate, first floor too high, both too high
def test_aupro_from_normal_scores_above_a_floor_equals_full_sort(monkeypatch, margin):
    from distillad.metrics import pixels
    rng = np.random.default_rng(7)
    _, masks = _test_set(rng, n_anom=6, n_norm=4)
    maps = [(rng.random(m.shape) * 0.8 + 0.25 * m).round(2).astype(np.float32) for m in masks]  # ties at the floor
    full = compute_metrics([1] * 6 + [0] * 4, list(range(10)), masks, maps)
    monkeypatch.setattr(pixels, "PARTIAL_MIN_PIXELS", 0)
    monkeypatch.setattr(pixels, "SAMPLE_STRIDE", 2)
    monkeypatch.setattr(pixels, "SAMPLE_MARGIN", margin)
    gathered = pixels.gather_pixels(masks, maps, max_fpr=0.3)
    assert gathered.normal.exact == (margin == -2.0)  # the last falls back to all scores
    part = aupro(masks, maps)
    quart = aupro_quartiles(masks, maps)
    for k, v in {**part, **quart}.items():
        assert v == pytest.approx(full[k], abs=1e-12), k


def test_pro_curve_cut_at_max_fpr():
    rng = np.random.default_rng(11)
    _, masks = _test_set(rng)
    maps = [(rng.random(m.shape) + 0.3 * m).round(2).astype(np.float32) for m in masks]
    fpr, pro = pro_curve(masks, maps)
    cf, cp = pro_curve(masks, maps, max_fpr=0.3)
    assert cf[-1] == 0.3 and np.all(np.diff(cf) >= 0) and cf.size < fpr.size
    assert _mvtec_trapezoid(cf, cp, 0.3) == pytest.approx(_mvtec_trapezoid(fpr, pro, 0.3), abs=1e-12)
    assert cp[-1] == pytest.approx(np.interp(0.3, fpr, pro))
