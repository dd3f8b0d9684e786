"""One module per method; each registers its Detector with `register_model`."""
import importlib

#: modules that define models; imported on first use of the registry (keeps `import distillad` light)
MODEL_MODULES = ["knn"]


def _import_all() -> None:
    for m in MODEL_MODULES:
        importlib.import_module(f"{__name__}.{m}")
