"""The shared figure style: a matplotlib style file, a colour-blind-safe palette and colormaps."""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from typing import Iterator

import matplotlib.pyplot as plt

STYLE_PATH = str(resources.files("analysis.plots") / "vlm-probes.mplstyle")
"""Path of the style file shipped with the package."""

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
"""Okabe-Ito colours (blue, vermillion, green, purple, orange, sky, yellow, black): the style's cycle."""

SEQUENTIAL_CMAP = "viridis"
"""Colormap for non-negative scores (attention, norms, attributions): perceptually uniform."""

DIVERGING_CMAP = "RdBu_r"
"""Colormap for signed scores centred on 0 (differences, signed attributions): ColorBrewer, colour-blind safe."""

COLUMN_WIDTH = 3.4
"""Width in inches of one paper column (two-column layouts); full text width is ``2 * COLUMN_WIDTH``."""


def use_style() -> None:
    """Apply the vlm-probes style to every figure made from now on in this process."""
    plt.style.use(STYLE_PATH)


@contextmanager
def style() -> Iterator[None]:
    """Context manager: apply the vlm-probes style inside the ``with`` block only."""
    with plt.style.context(STYLE_PATH):
        yield
