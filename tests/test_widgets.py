"""The explorers redraw from precomputed results: moving a control never calls the model."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from analysis.probes import attention_maps  # noqa: E402
from analysis.probes.flow import KnockoutResult  # noqa: E402
from analysis.widgets import attention_explorer, knockout_explorer  # noqa: E402
from conftest import QUESTION  # noqa: E402


def test_attention_explorer_moves_without_model_calls(tiny, photo, monkeypatch):
    vlm = tiny("llava")
    maps = attention_maps(vlm, vlm.prepare(photo, QUESTION), query="question+last", rollout=True)
    calls = []
    monkeypatch.setattr(vlm.model, "forward", lambda *a, **k: calls.append(1))
    drawn = []
    monkeypatch.setattr("matplotlib.pyplot.show", lambda: drawn.append(1))
    box = attention_explorer(maps)
    (layer, head), (query, kind) = box.children[0].children, box.children[1].children
    assert kind.options == ("attention", "corrected", "rollout")
    layer.value = int(maps.layers[-1])
    head.value = int(maps.heads[1])
    query.value = int(maps.query_positions[0])
    kind.value = "rollout"
    kind.value = "corrected"
    assert calls == [] and len(drawn) == 1 + 5  # the first drawing, then one per change


def test_knockout_explorer_filters(monkeypatch):
    frame = pd.DataFrame({"sample": [0, 0, 1, 1], "question_type": ["A", "A", "B", "B"],
                          "block": ["image->last", "question->last"] * 2, "layer": [0, 0, 0, 0],
                          "change": [1.0, -5.0, 2.0, -3.0]})
    frame = frame.assign(first_layer=0, last_layer=0, answer="yes", p_base=0.5, p_new=0.5 * (1 + frame["change"] / 100))
    drawn = []
    monkeypatch.setattr("matplotlib.pyplot.show", lambda: drawn.append(1))
    box = knockout_explorer(KnockoutResult(frame, n_samples=2, n_correct=2, window=1), "m", "d")
    chosen, qtype = box.children[0].children
    qtype.value = "B"
    chosen.value = ("image->last",)
    assert len(drawn) == 1 + 2  # the first drawing, then one per change
