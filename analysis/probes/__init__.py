"""The probes. Each computes and returns tidy DataFrames (plus small result objects); plots draw.

- attention maps: ``attention_maps`` (text -> image attention, mass, sinks, rollout, localisation)
- information flow: ``information_flow`` (attention knockout), ``region_knockout``, ``logit_lens``
- implicit alignment: ``implicit_alignment``, ``alignment_vs_accuracy``
- representation shift and steering: ``representation_shift``, ``concept_shift``, ``steering_vector``,
  ``steer``, ``steering_effect``
- attributions and their sanity checks: ``attribute``, ``sanity_report``
- the shared attention backend: ``probing``, ``Recording``, ``Edges``

Names are imported on first use, so ``analysis.capture`` (which the representation probes build
on, and which uses ``analysis.probes.samples``) can be imported on its own without a cycle.
"""

from importlib import import_module

_EXPORTS = {
    "alignment": ("alignment_vs_accuracy", "implicit_alignment"),
    "attention": ("AttentionMaps", "attention_maps", "localisation_sweep"),
    "attribution": ("attribute",),
    "backend": ("Edges", "Recording", "probing"),
    "flow": ("BLOCKS", "information_flow", "knockout_logits", "knockout_probs", "logit_lens", "region_knockout"),
    "localisation": ("localisation_scores",),
    "samples": ("Sample", "as_samples"),
    "sanity": ("default_methods", "sanity_report"),
    "shift": ("concept_shift", "representation_shift"),
    "sinks": ("detect_sinks",),
    "steering": ("steer", "steering_effect", "steering_vector"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'analysis.probes' has no attribute {name!r}")
    value = getattr(import_module(f"analysis.probes.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
