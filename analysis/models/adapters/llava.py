"""LLaVA-1.5: one square image, CLIP patches row-major (24 x 24 = 576 at 336 px / patch 14)."""

from __future__ import annotations

from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import clip_style


class LlavaAdapter(Adapter):
    family = "llava"
    model_types = ("llava",)
    title = "LLaVA-1.5"

    def layout(self, inputs, image_size):
        vision = self.vision_config()
        affine, _ = clip_style(self.processor.image_processor, *image_size)
        side = vision.image_size // vision.patch_size
        out = Layout()
        if getattr(self.model.config, "vision_feature_select_strategy", "default") == "full":
            out.add_special(0, -1, -1, "cls")
        out.add_grid(0, "image", side, side, vision.patch_size, vision.patch_size, affine)
        return out
