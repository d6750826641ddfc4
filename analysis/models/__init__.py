"""The VLM layer: ``load_vlm``, the ``VLM`` wrapper and the per-family adapters."""

from analysis.models.adapters import SUPPORTED_FAMILIES, Adapter, adapter_for
from analysis.models.inputs import PreparedInputs
from analysis.models.vlm import VLM, load_vlm

__all__ = ["SUPPORTED_FAMILIES", "Adapter", "PreparedInputs", "VLM", "adapter_for", "load_vlm"]
