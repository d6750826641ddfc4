"""Figures: the shared style, ``save_figure`` and one function per figure kind.

Plot functions draw with the current matplotlib settings; call ``use_style()`` first (every
notebook does) for the vlm-probes look.
"""

from analysis.plots.attention import plot_head_overlays, plot_layer_overlays, plot_localisation, plot_mass_heatmap
from analysis.plots.flow import knockout_curves, logit_lens_curves, plot_region_knockout
from analysis.plots.overlay import draw_token_scores, plot_token_overlay
from analysis.plots.representations import (plot_alignment_curves, plot_concept_grid, plot_consistency_vs_recovery,
                                            plot_recovery, plot_score_vs_accuracy, plot_steering_outcomes,
                                            plot_token_norms)
from analysis.plots.sanity import plot_comparison, plot_method_maps, plot_randomisation
from analysis.plots.save import save_figure
from analysis.plots.style import COLUMN_WIDTH, DIVERGING_CMAP, PALETTE, SEQUENTIAL_CMAP, STYLE_PATH, style, use_style
from analysis.plots.zoo import (accuracy_table, plot_accuracy_bars, plot_accuracy_heatmap, plot_example_scenes,
                                plot_trajectory)

__all__ = [
    "COLUMN_WIDTH", "DIVERGING_CMAP", "PALETTE", "SEQUENTIAL_CMAP", "STYLE_PATH", "accuracy_table",
    "draw_token_scores", "knockout_curves", "logit_lens_curves", "plot_accuracy_bars", "plot_accuracy_heatmap", "plot_alignment_curves",
    "plot_comparison", "plot_concept_grid", "plot_consistency_vs_recovery", "plot_example_scenes",
    "plot_head_overlays", "plot_layer_overlays", "plot_localisation", "plot_mass_heatmap", "plot_method_maps",
    "plot_randomisation", "plot_recovery", "plot_region_knockout", "plot_score_vs_accuracy", "plot_steering_outcomes", "plot_token_norms",
    "plot_token_overlay", "plot_trajectory", "save_figure", "style", "use_style",
]

from analysis.plots.redundancy import (plot_accuracy_vs_flops, plot_accuracy_vs_kept, plot_permutation,  # noqa: E402
                                       plot_region_drop)

__all__ += ["plot_accuracy_vs_flops", "plot_accuracy_vs_kept", "plot_permutation", "plot_region_drop"]
