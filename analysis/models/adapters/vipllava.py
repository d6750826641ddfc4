"""ViP-LLaVA: LLaVA-1.5's geometry (CLIP 336 px / patch 14 -> 24 x 24 = 576 tokens, CLS dropped) with the
features of several vision layers concatenated before the projector (no effect on the layout)."""

from __future__ import annotations

from analysis.models.adapters.llava import LlavaAdapter


class VipLlavaAdapter(LlavaAdapter):
    family = "vipllava"
    model_types = ("vipllava",)
    title = "ViP-LLaVA"
