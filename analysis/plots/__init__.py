"""Figures: the shared style, ``save_figure`` and one function per figure kind.

Plot functions draw with the current matplotlib settings; call ``use_style()`` first (every
notebook does) for the vlm-probes look.
"""

from analysis.plots.attention import plot_head_overlays, plot_layer_overlays, plot_localisation, plot_mass_heatmap
from analysis.plots.flow import knockout_curves, logit_lens_curves
from analysis.plots.overlay import draw_token_scores, plot_token_overlay
from analysis.plots.save import save_figure
from analysis.plots.style import COLUMN_WIDTH, DIVERGING_CMAP, PALETTE, SEQUENTIAL_CMAP, STYLE_PATH, style, use_style

__all__ = ["COLUMN_WIDTH", "DIVERGING_CMAP", "PALETTE", "SEQUENTIAL_CMAP", "STYLE_PATH", "draw_token_scores",
           "knockout_curves", "logit_lens_curves", "plot_head_overlays", "plot_layer_overlays", "plot_localisation",
           "plot_mass_heatmap",
           "plot_token_overlay", "save_figure", "style", "use_style"]
