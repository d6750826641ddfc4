"""LLaVA-OneVision and LLaVA-NeXT-Video: LLaVA-NeXT's any-res layout, with their own variants.

LLaVA-OneVision (SigLIP 384 px / patch 14, no CLS: strategy ``"full"``): the base image as 27 x 27
tokens, then the unpadded high-resolution grid with a newline token after each row; when that grid
holds more than ``anyres_max_N`` tiles' worth of cells (ratio > 1.1) the model shrinks it by
bilinear interpolation to ``(rows // ratio) x (cols // ratio)`` cells, each covering a proportional
slice of the unpadded region. LLaVA-NeXT-Video's image path is LLaVA-NeXT's.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.models.adapters.llava_next import LlavaNextAdapter


class LlavaOnevisionAdapter(LlavaNextAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)
    title = "LLaVA-OneVision"
    image_inputs = ("pixel_values", "image_sizes", "batch_num_images")
    strategy = "full"

    def high_res_boxes(self, image_size):
        """The unpadded grid's boxes ``(rows, cols, 4)``, resampled as the model does above ``anyres_max_N``."""
        boxes = super().high_res_boxes(image_size)
        rows, cols = boxes.shape[:2]
        side = self.vision_config().image_size // self.vision_config().patch_size
        max_tiles = int(str(getattr(self.model.config, "vision_aspect_ratio", "anyres_max_9")).strip("anyres_max_"))
        ratio = math.sqrt(rows * cols / (max_tiles * side**2))
        if ratio <= 1.1:
            return boxes
        new_rows, new_cols = int(rows // ratio), int(cols // ratio)
        x0, y0, x1, y1 = boxes[0, 0, 0], boxes[0, 0, 1], boxes[-1, -1, 2], boxes[-1, -1, 3]
        xs, ys = np.linspace(x0, x1, new_cols + 1), np.linspace(y0, y1, new_rows + 1)
        out = np.empty((new_rows, new_cols, 4))
        out[..., 0], out[..., 2] = xs[None, :-1], xs[None, 1:]
        out[..., 1], out[..., 3] = ys[:-1, None], ys[1:, None]
        return out


class LlavaNextVideoAdapter(LlavaNextAdapter):
    family = "llava_next_video"
    model_types = ("llava_next_video",)
    title = "LLaVA-NeXT-Video"
