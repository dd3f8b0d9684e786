"""distillad: visual anomaly detection by knowledge distillation.

    import distillad
    teacher = distillad.teachers.create("tf_efficientnet_lite0")        # offline weights
    model = distillad.create_model("l2bt", teacher=teacher)
    model.fit(split.train)
    pred = model.predict(images)     # Prediction(scores, maps on original geometry, ...)
    model.save("runs/x"); model = distillad.load("runs/x")
"""
__version__ = "0.1.0"

from .models.base import Detector, Prediction, create_model, load, model_names, register_model  # noqa: E402

__all__ = ["Detector", "Prediction", "create_model", "load", "model_names", "register_model", "__version__"]
