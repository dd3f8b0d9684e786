"""One module per method; each registers its Detector with `register_model`."""
import importlib

#: modules that define models; imported on first use of the registry (keeps `import distillad` light)
MODEL_MODULES = ["knn", "l2bt", "hkt", "dual_student", "onen"]


def _import_all() -> None:
    for m in MODEL_MODULES:
        try:
            importlib.import_module(f"{__name__}.{m}")
        except ModuleNotFoundError as e:  # a method not written yet; anything else is a real error
            if e.name != f"{__name__}.{m}":
                raise


from .base import Detector, Prediction, create_model, load, model_names, register_model  # noqa: E402
