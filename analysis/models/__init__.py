"""The VLM layer: ``load_vlm`` and the ``VLM`` wrapper, named sources (``zoo:``, ``tiny:``, ...),
activation sites and the one hook mechanism (``sites``), answers and the one correctness rule
(``answers``), and the per-family adapters that own all input surgery.

Each name loads its module on first use (``analysis.models.sources`` alone is light), so
``import analysis`` does not import torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.models import answers, sites
    from analysis.models.adapters import SUPPORTED_FAMILIES, Adapter, adapter_for
    from analysis.models.inputs import PreparedInputs
    from analysis.models.sources import register_source
    from analysis.models.vlm import VLM, load_vlm, reusing_inputs

_HOME = {"SUPPORTED_FAMILIES": "adapters", "Adapter": "adapters", "adapter_for": "adapters", "PreparedInputs": "inputs",
         "register_source": "sources", "VLM": "vlm", "load_vlm": "vlm", "reusing_inputs": "vlm"}
__all__ = ["SUPPORTED_FAMILIES", "Adapter", "PreparedInputs", "VLM", "adapter_for", "answers", "load_vlm",
           "register_source", "reusing_inputs", "sites"]


def __getattr__(name: str):
    if name in ("answers", "sites"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
