"""The probes. Each computes and returns tidy DataFrames (plus small result objects); plots draw.

- attention maps: ``attention_maps`` (text -> image attention, mass, sinks, rollout, localisation)
- information flow: ``information_flow`` (attention knockout), ``region_knockout``, ``logit_lens``
- implicit alignment: ``implicit_alignment``, ``alignment_vs_accuracy``
- representation shift and steering: ``representation_shift``, ``concept_shift``, ``steering_vector``,
  ``steer``, ``steering_effect``
- attributions and their sanity checks: ``attribute``, ``sanity_report``
- the shared attention backend: ``probing``, ``Recording``, ``Edges``
"""

from analysis.data.samples import Sample, as_samples
from analysis.models.localisation import localisation_scores
from analysis.probes.alignment import alignment_vs_accuracy, implicit_alignment
from analysis.probes.attention import AttentionMaps, attention_maps, localisation_sweep
from analysis.probes.attribution import attribute
from analysis.probes.backend import Edges, Recording, probing
from analysis.probes.flow import (
                                  BLOCKS,
                                  KnockoutResult,
                                  RegionKnockoutResult,
                                  information_flow,
                                  logit_lens,
                                  region_knockout,
)
from analysis.probes.knockout import knockout_logits, knockout_probs, unmodified_run
from analysis.probes.sanity import default_methods, sanity_report
from analysis.probes.shift import concept_shift, representation_shift
from analysis.probes.sinks import detect_sinks
from analysis.probes.steering import steer, steering_effect, steering_vector

__all__ = [
    "BLOCKS", "AttentionMaps", "Edges", "KnockoutResult", "Recording", "RegionKnockoutResult", "Sample",
    "alignment_vs_accuracy", "as_samples", "attention_maps", "attribute", "concept_shift", "default_methods",
    "detect_sinks", "implicit_alignment", "information_flow", "knockout_logits", "knockout_probs",
    "localisation_scores", "localisation_sweep", "logit_lens", "probing", "region_knockout",
    "representation_shift", "sanity_report", "steer", "steering_effect", "steering_vector", "unmodified_run",
]

from analysis.probes.redundancy import (RANKINGS, RedundancyResult, RegionDropResult, bootstrap_interval,  # noqa: E402
                                        drop_region, permute_image_tokens, pyramid_drop, token_redundancy,
                                        wilson_interval)

__all__ += ["RANKINGS", "RedundancyResult", "RegionDropResult", "bootstrap_interval", "drop_region",
            "permute_image_tokens", "pyramid_drop", "token_redundancy", "wilson_interval"]
