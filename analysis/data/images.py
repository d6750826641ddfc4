"""Image loading: any user-supplied image becomes an RGB ``PIL.Image``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from analysis.errors import ImageError

ImageLike = str | os.PathLike | Image.Image | np.ndarray


def load_image(image: ImageLike) -> Image.Image:
    """Return ``image`` as an RGB ``PIL.Image``.

    Args:
        image: a path to an image file, a ``PIL.Image`` of any mode, or a uint8 array of shape
            ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.

    Non-RGB images are converted, not rejected: greyscale is replicated, palettes are expanded,
    and transparent pixels are composited over white.
    """
    if image is None:
        raise ImageError("no image given: pass a path, a PIL.Image or an (H, W, 3) uint8 array")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise ImageError(f"image file {str(path)!r} does not exist; check the path")
        try:
            with Image.open(path) as opened:
                opened.load()
                return _to_rgb(opened)
        except (UnidentifiedImageError, OSError) as err:
            raise ImageError(
                f"cannot read {str(path)!r} as an image ({err}); pass a PNG/JPEG file or a PIL.Image"
            ) from None
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ImageError(
                f"an image array must have shape (H, W), (H, W, 3) or (H, W, 4); got {image.shape}"
            )
        if image.dtype != np.uint8:
            raise ImageError(
                f"an image array must be uint8 in [0, 255]; got {image.dtype} "
                "(use (x * 255).clip(0, 255).astype(np.uint8) for floats in [0, 1])"
            )
        return _to_rgb(Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image))
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    raise ImageError(
        f"unsupported image type {type(image).__name__}: pass a path, a PIL.Image or a uint8 array"
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
