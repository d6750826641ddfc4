"""Pixel geometry shared by the adapters: where a processed image's pixels come from.

Every adapter maps each image token to a cell of a patch grid and that cell to a box in the
ORIGINAL image's pixel coordinates ``(x0, y0, x1, y1)``, so a per-token score can be drawn on the
image the user passed and compared with boxes given in that image (e.g. zoo ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Affine:
    """Axis-aligned map from a processed image's pixel coordinates to the original image's.

    ``x_orig = sx * x + tx`` and ``y_orig = sy * y + ty``.
    """

    sx: float = 1.0
    sy: float = 1.0
    tx: float = 0.0
    ty: float = 0.0

    def then(self, outer: "Affine") -> "Affine":
        """Return the map that applies ``self`` and then ``outer``."""
        return Affine(
            sx=outer.sx * self.sx,
            sy=outer.sy * self.sy,
            tx=outer.sx * self.tx + outer.tx,
            ty=outer.sy * self.ty + outer.ty,
        )

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        """Return the box ``(x0, y0, x1, y1)`` mapped to original coordinates."""
        return (self.sx * x0 + self.tx, self.sy * y0 + self.ty, self.sx * x1 + self.tx, self.sy * y1 + self.ty)


def resize_to(width: float, height: float, new_width: float, new_height: float) -> Affine:
    """Return the map from an image resized to ``(new_width, new_height)`` back to its source."""
    return Affine(sx=width / new_width, sy=height / new_height)


def _size_dict(size) -> dict:
    if size is None:
        return {}
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    return {k: getattr(size, k) for k in ("height", "width", "shortest_edge", "longest_edge") if getattr(size, k, None)}


def clip_style(image_processor, width: int, height: int) -> tuple[Affine, tuple[int, int]]:
    """Geometry of a CLIP-style processor: optional pad to square, resize, centre crop.

    Args:
        image_processor: an image processor with ``do_pad`` / ``do_resize`` / ``size`` /
            ``do_center_crop`` / ``crop_size`` attributes (CLIP, LLaVA, SigLIP processors).
        width, height: the original image size in pixels.

    Returns:
        ``(affine, (out_width, out_height))``: the map from processed pixels to original pixels and
        the processed image size.
    """
    outer = Affine()
    w, h = float(width), float(height)
    if getattr(image_processor, "do_pad", False):
        side = max(w, h)
        outer = Affine(tx=-((side - w) // 2), ty=-((side - h) // 2))
        w = h = side
    if getattr(image_processor, "do_resize", True):
        size = _size_dict(image_processor.size)
        if "height" in size and "width" in size:
            new_h, new_w = float(size["height"]), float(size["width"])
        elif "shortest_edge" in size:
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = float(size["shortest_edge"]), float(int(size["shortest_edge"] * long / short))
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            raise ValueError(f"cannot interpret image processor size {size}")
        outer = resize_to(w, h, new_w, new_h).then(outer)
        w, h = new_w, new_h
    if getattr(image_processor, "do_center_crop", False):
        crop = _size_dict(image_processor.crop_size)
        ch, cw = float(crop["height"]), float(crop["width"])
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        outer = Affine(tx=left, ty=top).then(outer)
        w, h = cw, ch
    return outer, (int(w), int(h))


def grid_cells(rows: int, cols: int, cell_w: float, cell_h: float, affine: Affine) -> np.ndarray:
    """Return the original-image boxes of a row-major ``rows x cols`` grid of cells.

    Returns:
        float array of shape ``(rows * cols, 4)`` with ``(x0, y0, x1, y1)`` per cell.
    """
    r, c = np.divmod(np.arange(rows * cols), cols)
    boxes = np.stack([c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h], axis=1).astype(float)
    boxes[:, [0, 2]] = affine.sx * boxes[:, [0, 2]] + affine.tx
    boxes[:, [1, 3]] = affine.sy * boxes[:, [1, 3]] + affine.ty
    return boxes
