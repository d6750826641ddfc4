"""Data: image loading and the synthetic shapes world."""

from analysis.data.images import load_image

__all__ = ["load_image"]
from analysis.data.shapes import QUESTION_TYPES, Sample, Scene, ShapeObject, ask, make_samples  # noqa: E402

__all__ += ["QUESTION_TYPES", "Sample", "Scene", "ShapeObject", "ask", "make_samples"]
