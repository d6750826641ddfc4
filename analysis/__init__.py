"""vlm-probes: look inside vision-language models.

Public API: ``analysis.load_vlm``, ``analysis.probes``, ``analysis.plots``, ``analysis.zoo``,
``analysis.testing``.
"""

from analysis.models import SUPPORTED_FAMILIES, VLM, PreparedInputs, load_vlm

__version__ = "0.1.0"
__all__ = ["SUPPORTED_FAMILIES", "VLM", "PreparedInputs", "load_vlm", "__version__"]
