"""One adapter per supported VLM family, looked up by ``config.model_type``."""

from __future__ import annotations

from analysis.errors import UnsupportedModelError
from analysis.models.adapters.base import Adapter, Layout
from analysis.models.adapters.idefics3 import Idefics3Adapter, SmolVLMAdapter
from analysis.models.adapters.llava import LlavaAdapter
from analysis.models.adapters.llava_next import LlavaNextAdapter
from analysis.models.adapters.paligemma import PaliGemmaAdapter
from analysis.models.adapters.qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter

ADAPTERS: tuple[type[Adapter], ...] = (
    LlavaAdapter,
    LlavaNextAdapter,
    Qwen2VLAdapter,
    Qwen2_5_VLAdapter,
    Idefics3Adapter,
    SmolVLMAdapter,
    PaliGemmaAdapter,
)
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(a.family for a in ADAPTERS)


def adapter_for(model_type: str) -> type[Adapter]:
    """Return the adapter class for a ``config.model_type``; raise a clear error if unsupported."""
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    supported = ", ".join(f"{a.title} ({'/'.join(a.model_types)})" for a in ADAPTERS)
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not a supported VLM family. Supported: {supported}. "
        "To add one, write an Adapter in analysis/models/adapters/ and list it in ADAPTERS."
    )


__all__ = ["ADAPTERS", "SUPPORTED_FAMILIES", "Adapter", "Layout", "adapter_for"]
