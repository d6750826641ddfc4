"""Data: image loading and the synthetic shapes world."""

from analysis.data.images import load_image

__all__ = ["load_image"]
