"""Which image-text-to-text model types of the installed transformers the probes support.

``python -m analysis families [--format markdown|json] [--no-checks]`` lists every model type
that transformers maps to ``AutoModelForImageTextToText`` with its status:

* ``full``: an adapter (all probes, patch geometry); with checks, its tiny model's conformance
  (``analysis.conformance``: idle = stock, recorded = eager, knockout = plain reference, each to
  1e-5, and the knockout's smallest effect) is measured and shown;
* ``not adapted yet``: no adapter yet; the reason and the nearest supported family
  (``analysis.models.adapters.NOT_SUPPORTED``);
* ``refused``: structurally outside what the probes measure (cross-attention to the image,
  Q-Former queries, VQ image tokens, encoder-decoders), with the reason;
* ``unclassified``: no adapter and not yet examined.

The README's table of families is this command's Markdown output; a test keeps the two in sync.
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

import numpy as np
from PIL import Image

from analysis.models.adapters import ADAPTERS, NOT_SUPPORTED

__all__ = ["STATUSES", "TOLERANCE", "family_table", "main", "markdown"]

TOLERANCE = 1e-5  # idle, recorded and knockout differences for a "pass" (fp32 tiny models)
STATUSES = ("full", "not adapted yet", "refused", "unclassified")


def _model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return sorted(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def _conformance(family: str):
    """``analysis.conformance`` of ``family``'s tiny model on a fixed random 200 x 150 image."""
    from analysis.conformance import conformance
    from analysis.testing import tiny_vlm

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8))
    return conformance(tiny_vlm(family), image, "what color is the circle ?")


def _checks(family: str) -> dict:
    """Conformance of ``family``'s tiny model: the pass flag and the numbers."""
    result = _conformance(family)
    passed = max(result.idle, result.recorded, result.knockout) <= TOLERANCE and result.effect >= 100 * TOLERANCE
    return {"checks": "pass" if passed else "FAIL", "idle": result.idle, "recorded": result.recorded,
            "knockout": result.knockout, "effect": result.effect}


def family_table(checks: bool = True) -> list[dict]:
    """Return one record per model type of the installed transformers' image-text-to-text mapping:
    ``model_type``, ``status``, ``family`` (the adapter's, or the nearest supported one), ``reason``,
    and with ``checks`` the conformance numbers of supported families' tiny models."""
    adapters = {t: a for a in ADAPTERS for t in a.model_types}
    rows = []
    for model_type in _model_types():
        if model_type in adapters:
            row = {"model_type": model_type, "status": "full", "family": adapters[model_type].title, "reason": ""}
            if checks:
                row |= _checks(adapters[model_type].family)
        elif model_type in NOT_SUPPORTED:
            nearest, reason = NOT_SUPPORTED[model_type]
            status, _, why = reason.partition(": ")
            title = next(a.title for a in ADAPTERS if a.family == nearest)
            row = {"model_type": model_type, "status": status, "family": f"nearest: {title}", "reason": why}
        else:
            row = {"model_type": model_type, "status": "unclassified", "family": "", "reason": "no adapter; not examined"}
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """Return ``rows`` as the README's Markdown table (a count line, then one line per model type)."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(rows)} model types.", "",
             "| model_type | status | family | reason / checks |", "|---|---|---|---|"]
    for r in rows:
        detail = r["reason"]
        if "checks" in r:  # the numbers are in the JSON; the table states what passed (stable across machines)
            detail = (f"tiny model {r['checks']}: idle = stock, recorded = eager, knockout = reference (each <= "
                      f"{TOLERANCE:g}), smallest knockout effect >= {100 * TOLERANCE:g}")
        lines.append(f"| `{r['model_type']}` | {r['status']} | {r['family']} | {detail} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis families``: print the table; exit status 1 if a supported family fails."""
    parser = argparse.ArgumentParser(prog="python -m analysis families", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.add_argument("--no-checks", action="store_true", help="skip the tiny models' conformance checks")
    args = parser.parse_args(argv)
    rows = family_table(checks=not args.no_checks)
    print(json.dumps(rows, indent=1) if args.format == "json" else markdown(rows))
    return int(any(r.get("checks") == "FAIL" for r in rows))
