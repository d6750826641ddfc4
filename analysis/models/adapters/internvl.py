"""InternVL (2.5 / 3): GOT-OCR2 tiling, each 448 px tile (patch 14, 32 x 32 patches) pixel-shuffled by
``downsample_ratio`` 0.5 into 16 x 16 = 256 tokens, row-major; tiles row-major, then the thumbnail.

The prompt's ``<IMG_CONTEXT>`` tokens (the image tokens) sit between ``<img>`` and ``</img>``.
"""

from __future__ import annotations

from analysis.errors import UnsupportedModelError
from analysis.models.adapters import tiling
from analysis.models.adapters.base import Adapter, Layout


def _side(value) -> int:
    """An ``int`` or a square ``(h, w)`` size as one int."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


class InternVLAdapter(Adapter):
    family = "internvl"
    model_types = ("internvl",)
    title = "InternVL"
    strategy = "default"  # the vision_feature_select_strategy whose token count the layout gives

    def tokens_per_side(self) -> int:
        """Tokens per tile side: ``image_size / patch_size * downsample_ratio``."""
        vision = self.vision_config()
        return int(_side(vision.image_size) // _side(vision.patch_size) * self.model.config.downsample_ratio)

    def layout(self, inputs, image_size):
        vision = self.vision_config()
        if getattr(self.model.config, "vision_feature_select_strategy", self.strategy) != self.strategy:
            raise UnsupportedModelError(f"{self.title}: only vision_feature_select_strategy={self.strategy!r} is mapped")
        side = self.tokens_per_side()
        cell = _side(vision.image_size) / side
        out = Layout()
        for index, (name, affine) in enumerate(tiling.tiles(self.processor.image_processor, *image_size)):
            out.add_grid(index, name, side, side, cell, cell, affine)
        return out
