"""Reports: heatmap overlays, ROC / PRO / score figures, markdown tables and the HTML report.

    from distillad.report import overlay, save_overlay, bench_table
    rgb = overlay(image, amap, mask, vmin=lo, vmax=hi)     # H x W x 3 uint8, GT contour in white
    print(bench_table([result_a, result_b]))              # several `evaluate` results side by side
"""
from .html import build_html
from .overlay import display_range, mask_contour, overlay, save_overlay
from .plots import histogram_png, pro_png, roc_png
from .tables import BENCH_METRICS, MAIN_METRICS, SIZE_METRICS, bench_table, metrics_markdown

__all__ = ["overlay", "save_overlay", "display_range", "mask_contour", "roc_png", "pro_png",
           "histogram_png", "metrics_markdown", "bench_table", "build_html", "MAIN_METRICS",
           "SIZE_METRICS", "BENCH_METRICS"]
