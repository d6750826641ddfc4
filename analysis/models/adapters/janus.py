"""Janus and DeepSeek-VL: one square image (SigLIP 384 px / patch 16 -> 24 x 24 = 576 tokens, row-major).

The processor resizes the image so that its longer side is 384 px (the shorter one at least ``min_size``), then pads
it to a square with the background colour, centred along the shorter side; the padding's cells get boxes clipped to
the image (zero area). The ``<image_placeholder>`` tokens sit between ``<begin_of_image>`` and ``<end_of_image>``.
Janus's image-generation parts (a VQ model, a generation head) are not used by the probes.
"""

from __future__ import annotations

from analysis.models.adapters.base import Adapter, Layout
from analysis.models.geometry import Affine, grid_cells, resize_to


def _side(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


class JanusAdapter(Adapter):
    family = "janus"
    model_types = ("janus",)
    title = "Janus"

    def layout(self, inputs, image_size):
        vision = self.vision_config()
        ip = self.processor.image_processor
        size = ip.size["height"] if isinstance(ip.size, dict) else ip.size.height
        width, height = image_size
        delta = size / max(width, height)
        new_w, new_h = max(round(width * delta), ip.min_size), max(round(height * delta), ip.min_size)
        affine = Affine(tx=-((size - new_w) // 2), ty=-((size - new_h) // 2)).then(resize_to(width, height, new_w, new_h))
        side = _side(vision.image_size) // _side(vision.patch_size)
        cell = size / side
        boxes = grid_cells(side, side, cell, cell, affine)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        out = Layout()
        out.add_cells(0, "image", (side, side), range(side * side), side, boxes)
        return out


class DeepseekVLAdapter(JanusAdapter):
    family = "deepseek_vl"
    model_types = ("deepseek_vl",)
    title = "DeepSeek-VL"


class DeepseekVLHybridAdapter(JanusAdapter):
    """DeepSeek-VL hybrid: DeepSeek-VL's layout; a high-resolution SAM tower sees the same padded square and its
    features are interpolated onto the same grid (``high_res_pixel_values``)."""

    family = "deepseek_vl_hybrid"
    model_types = ("deepseek_vl_hybrid",)
    title = "DeepSeek-VL (hybrid)"
    image_inputs = ("pixel_values", "high_res_pixel_values")
