"""The probes. Each computes and returns tidy DataFrames (plus small result objects); plots draw.

- attention maps: ``attention_maps`` (text -> image attention, mass, sinks, rollout, localisation)
- information flow: ``information_flow`` (attention knockout), ``region_knockout``, ``logit_lens``
- the shared attention backend: ``probing``, ``Recording``, ``Edges``
"""

from analysis.probes.attention import AttentionMaps, attention_maps, localisation_sweep
from analysis.probes.backend import Edges, Recording, probing
from analysis.probes.flow import BLOCKS, information_flow, knockout_logits, knockout_probs, logit_lens, region_knockout
from analysis.probes.localisation import localisation_scores
from analysis.probes.samples import Sample, as_samples
from analysis.probes.sinks import detect_sinks

__all__ = [
    "BLOCKS", "AttentionMaps", "Edges", "Recording", "Sample", "as_samples", "attention_maps", "detect_sinks",
    "information_flow", "knockout_logits", "knockout_probs", "localisation_scores", "localisation_sweep", "logit_lens", "probing",
    "region_knockout",
]
