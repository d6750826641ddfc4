"""LLaVA-NeXT: an overview tile, then the unpadded high-resolution grid with a newline per row."""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers.image_processing_utils import select_best_resolution
from transformers.models.llava_next.modeling_llava_next import unpad_image

from analysis.errors import UnsupportedModelError
from analysis.models.adapters.base import Adapter, Layout, tensor_to_list
from analysis.models.geometry import Affine, grid_cells, resize_to


class LlavaNextAdapter(Adapter):
    family = "llava_next"
    model_types = ("llava_next",)
    title = "LLaVA-NeXT"
    image_inputs = ("pixel_values", "image_sizes")
    strategy = "default"  # the vision_feature_select_strategy whose token count the layout gives

    def layout(self, inputs, image_size):
        config = self.model.config
        strategy = getattr(config, "vision_feature_select_strategy", "default")
        if strategy != self.strategy:
            raise UnsupportedModelError(
                f"{self.title} with vision_feature_select_strategy={strategy!r} is not supported; "
                f"use a checkpoint with the {self.strategy!r} strategy"
            )
        vision = self.vision_config()
        width, height = image_size
        side = vision.image_size // vision.patch_size
        cell = vision.image_size / side
        out = Layout()
        out.add_grid(0, "overview", side, side, cell, cell, resize_to(width, height, vision.image_size, vision.image_size))
        boxes = self.high_res_boxes(image_size)
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, width)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, height)
        n_rows, n_cols = boxes.shape[:2]
        has_newline = getattr(self.model.model, "image_newline", None) is not None
        for r in range(n_rows):
            out.add_cells(1, "high-res", (n_rows, n_cols), r * n_cols + np.arange(n_cols), n_cols, boxes[r])
            if has_newline:
                out.add_special(1, r, n_cols, "newline")
        return out

    def high_res_boxes(self, image_size: tuple[int, int]) -> np.ndarray:
        """Return ``(rows, cols, 4)`` original-image boxes of the unpadded high-resolution grid's cells
        (unclipped; cells of the padding are cut away, partial ones may reach outside the image)."""
        kept, canvas = self._high_res_canvas(image_size)[:2]
        return canvas[kept.flatten()].reshape(*kept.shape, 4)

    def high_res_sources(self, image_size: tuple[int, int]) -> np.ndarray:
        """Return ``(rows, cols, 2)``: where the vision tower saw each cell of the unpadded high-resolution
        grid (the cells of ``LlavaNextAdapter.high_res_boxes``, before any resampling a subclass does):
        the tile of ``pixel_values`` (1 = the first high-resolution tile, row-major over the canvas; 0 is
        the overview) and the patch within that tile (row-major over its ``side x side`` grid)."""
        kept, _, side, tiles_per_row = self._high_res_canvas(image_size)
        canvas_row, canvas_col = np.divmod(kept, tiles_per_row * side)
        tile = 1 + (canvas_row // side) * tiles_per_row + canvas_col // side
        return np.stack([tile, (canvas_row % side) * side + canvas_col % side], axis=-1)

    def _high_res_canvas(self, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Return ``(kept, canvas_boxes, side, tiles_per_row)``: the flat canvas-cell index of each cell of
        the unpadded grid ``(rows, cols)``, the original-image boxes of every canvas cell, the cells per
        tile side and the tiles per canvas row."""
        config = self.model.config
        vision = self.vision_config()
        width, height = image_size
        side = vision.image_size // vision.patch_size
        # High-res canvas: the image scaled to fit the best pinpoint resolution, centred, padded.
        pinpoints = tensor_to_list(config.image_grid_pinpoints)
        best_h, best_w = select_best_resolution((height, width), pinpoints)
        scale_w, scale_h = best_w / width, best_h / height
        if scale_w < scale_h:
            new_w, new_h = best_w, min(math.ceil(height * scale_w), best_h)
        else:
            new_w, new_h = min(math.ceil(width * scale_h), best_w), best_h
        canvas_to_orig = Affine(tx=-((best_w - new_w) // 2), ty=-((best_h - new_h) // 2)).then(
            resize_to(width, height, new_w, new_h)
        )
        tile_px = vision.image_size
        rows_c, cols_c = (best_h // tile_px) * side, (best_w // tile_px) * side
        # The model's own unpadding, applied to cell indices, says which canvas cells survive.
        kept = unpad_image(torch.arange(rows_c * cols_c).view(1, rows_c, cols_c), (height, width))[0]
        canvas = grid_cells(rows_c, cols_c, tile_px / side, tile_px / side, canvas_to_orig)
        return kept.numpy(), canvas, side, best_w // tile_px
