"""Aya Vision and Cohere2-Vision: InternVL's geometry (GOT-OCR2-style tiles row-major, then the whole image as one
more tile, pixel-shuffled 2 x 2) in front of a Cohere2 decoder.

Aya Vision (SigLIP 364 px / patch 14 -> 26 x 26, shuffled to 13 x 13 = 169 tokens per tile): the processor writes
``<|START_OF_IMG|>``, ``TILE_i`` + the tile's ``<|IMG_PATCH|>`` tokens per tile, ``TILE_GLOBAL`` + the thumbnail's,
``<|END_OF_IMG|>``. Cohere2-Vision (SigLIP2 512 px / patch 16 -> 32 x 32, shuffled to 16 x 16 = 256): each tile's
``<|IMG_PATCH|>`` tokens are followed by ``<|IMG_LINE_BREAK|>``, and its processor picks the tile arrangement by its
own rule (the least up-scaling). The markers are text tokens (role ``other``). The Cohere2 decoder scales its logits
by ``logit_scale`` in its own causal LM only (the VLM of transformers 5.24 does not, so neither does
``VLM.unembed``) and alternates sliding-window and global layers (left to the model).
"""

from __future__ import annotations

from analysis.models.adapters.internvl import InternVLAdapter, _side


class AyaVisionAdapter(InternVLAdapter):
    family = "aya_vision"
    model_types = ("aya_vision",)
    title = "Aya Vision"
    strategy = "full"  # SigLIP: no CLS token to drop

    def tokens_per_side(self) -> int:
        """Tokens per tile side: ``image_size / patch_size / downsample_factor``."""
        vision = self.vision_config()
        return int(_side(vision.image_size) // _side(vision.patch_size) // self.model.config.downsample_factor)


class Cohere2VisionAdapter(AyaVisionAdapter):
    family = "cohere2_vision"
    model_types = ("cohere2_vision",)
    title = "Cohere2-Vision"
