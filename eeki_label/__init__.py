"""eeki-label: A-G energy-efficiency labels for ONNX models.

Public API (imported lazily so that ``eeki-label --help`` stays instant)::

    from eeki_label import assess, AssessOptions, Label, LabelSet
    labels = assess("model.onnx", AssessOptions(device_classes=("edge-gpu-batch1",)))
"""

__version__ = "0.3.0"

__all__ = ["assess", "AssessOptions", "Label", "LabelSet", "__version__"]


def __getattr__(name: str):
    if name in ("assess", "AssessOptions"):
        from eeki_label import pipeline

        return getattr(pipeline, name)
    if name in ("Label", "LabelSet"):
        from eeki_label import models

        return getattr(models, name)
    raise AttributeError(name)
