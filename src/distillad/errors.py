"""Exceptions raised by distillad. Every message names the file (or object) and the problem."""


class DistilladError(Exception):
    """Base class of every error distillad raises on purpose."""


class DataError(DistilladError, ValueError):
    """Unreadable, missing or inconsistent input data (image, mask, folder)."""


class WeightsNotFoundError(DistilladError, FileNotFoundError):
    """Pretrained weights were asked for but are not available offline."""


class ModelFileError(DistilladError, ValueError):
    """A saved model (or checkpoint) that cannot be loaded: wrong version, shapes, teacher."""


class NotFittedError(DistilladError, RuntimeError):
    """`predict` (or `save`) called before `fit`."""
