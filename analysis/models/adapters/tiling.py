"""GOT-OCR2-style tiling (``GotOcr2ImageProcessor``, used by InternVL, Aya Vision and GOT-OCR2; Cohere2-Vision's
processor tiles the same way with its own choice of arrangement).

With ``crop_to_patches`` the image is resized to a ``cols x rows`` canvas of square tiles (the
arrangement of at most ``max_patches`` tiles whose aspect ratio is closest to the image's) and cut
into the tiles row-major; when there is more than one tile a thumbnail (the whole image resized to one
tile) follows them. Without it, the whole image is resized to one tile.
"""

from __future__ import annotations

import sys

from analysis.models.geometry import Affine, resize_to


def tiles(image_processor, width: int, height: int) -> list[tuple[str, Affine]]:
    """Return, in the processor's order, each tile's name and its map from tile pixels to the original image.

    Args:
        image_processor: a ``GotOcr2ImageProcessor`` (``size``, ``crop_to_patches``, ``min_patches``,
            ``max_patches``).
        width, height: the original image size in pixels.
    """
    size = image_processor.size
    tile_h, tile_w = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
    if not getattr(image_processor, "crop_to_patches", False) or image_processor.max_patches <= 1:
        return [("image", resize_to(width, height, tile_w, tile_h))]
    # The arrangement the processor's own module picks (Cohere2-Vision has its own rule), else GOT-OCR2's
    # (imported here: its module pulls in torchvision, seconds that only tiling processors need).
    canvas_of = getattr(sys.modules[type(image_processor).__module__], "get_optimal_tiled_canvas", None)
    if canvas_of is None:
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas as canvas_of
    cols, rows = canvas_of((height, width), (tile_h, tile_w), image_processor.min_patches, image_processor.max_patches)
    canvas = resize_to(width, height, tile_w * cols, tile_h * rows)
    out = [(f"row {r + 1} col {c + 1}", Affine(tx=c * tile_w, ty=r * tile_h).then(canvas))
           for r in range(rows) for c in range(cols)]
    if len(out) > 1:
        out.append(("thumbnail", resize_to(width, height, tile_w, tile_h)))
    return out
