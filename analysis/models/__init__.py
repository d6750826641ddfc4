"""The VLM layer: ``load_vlm`` and the ``VLM`` wrapper, named sources (``zoo:``, ``tiny:``, ...),
activation sites and the one hook mechanism (``sites``), answers and the one correctness rule
(``answers``), and the per-family adapters that own all input surgery."""

from analysis.models import answers, sites
from analysis.models.adapters import SUPPORTED_FAMILIES, Adapter, adapter_for
from analysis.models.inputs import PreparedInputs
from analysis.models.sources import register_source
from analysis.models.vlm import VLM, load_vlm, reusing_inputs

__all__ = ["SUPPORTED_FAMILIES", "Adapter", "PreparedInputs", "VLM", "adapter_for", "answers", "load_vlm",
           "register_source", "reusing_inputs", "sites"]
