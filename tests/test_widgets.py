"""The explorers redraw from precomputed results: moving a control never calls the model, a revisited
setting comes from the cache, and each redraw takes well under a second on the embedded default.
Whether the notebooks show them (``interactive``) is decided by ``show_explorers``. The browser
side (JupyterLab, the widget front-end, Chromium) is tests/test_browser.py."""

from __future__ import annotations

import functools
import time
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from analysis.probes import attention_maps, information_flow, logit_lens  # noqa: E402
from analysis.probes.flow import KnockoutResult  # noqa: E402
from analysis.widgets import (attention_explorer, knockout_explorer, logit_lens_explorer,  # noqa: E402
                              show_explorers)
from conftest import QUESTION  # noqa: E402


def _no_forward(vlm, monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(vlm.model, "forward", lambda *a, **k: calls.append(1))
    return calls


def test_attention_explorer_moves_without_model_calls(tiny, photo, monkeypatch):
    vlm = tiny("llava")
    maps = attention_maps(vlm, vlm.prepare(photo, QUESTION), query="question+last", rollout=True)
    calls = _no_forward(vlm, monkeypatch)
    box = attention_explorer(maps)
    c = box.controls
    assert c["kind"].options == ("attention", "corrected", "rollout") and c["view"].options == ("overlay", "grid")
    assert "vlm-attention-explorer" in box._dom_classes and box.draws == 1
    seen = {box.figure.value}
    for name, value in [("layer", int(maps.layers[-1])), ("head", int(maps.heads[1])),
                        ("query", int(maps.query_positions[0])), ("kind", "rollout"), ("view", "grid")]:
        c[name].value = value
        assert box.figure.value not in seen, f"moving {name} did not change the figure"
        seen.add(box.figure.value)
    assert box.draws == 6
    c["head"].value = -1  # rollout has no head axis: same drawing, from the cache
    c["view"].value = "overlay"  # a setting shown before
    assert box.draws == 6 and calls == []
    assert box.messages.outputs == ()


def test_knockout_explorer_filters(monkeypatch):
    frame = pd.DataFrame({"sample": [0, 0, 1, 1], "question_type": ["A", "A", "B", "B"],
                          "block": ["image->last", "question->last"] * 2, "layer": [0, 0, 0, 0],
                          "change": [1.0, -5.0, 2.0, -3.0]})
    frame = frame.assign(first_layer=0, last_layer=0, answer="yes", p_base=0.5, p_new=0.5 * (1 + frame["change"] / 100))
    box = knockout_explorer(KnockoutResult(frame, n_samples=2, n_correct=2, window=1), "m", "d")
    assert box.controls["qtype"].options == ("all", "A", "B") and "vlm-knockout-explorer" in box._dom_classes
    first = box.figure.value
    box.controls["qtype"].value = "B"
    box.controls["edges"].value = ("image->last",)
    box.controls["edges"].value = ()  # nothing selected: a note, not an error
    assert box.draws == 4 and len({first, box.figure.value}) == 2
    box.controls["edges"].value = ("question->last", "image->last")  # the first selection, in another order
    box.controls["qtype"].value = "all"
    assert box.draws == 4 and box.figure.value == first


def test_logit_lens_explorer_position_and_norm(tiny, photo, monkeypatch):
    vlm = tiny("llava")
    sample = [{"image": photo, "question": QUESTION, "answer": "red"}]
    lens = {norm: logit_lens(vlm, sample, positions=("question", "last"), final_norm=norm, progress=False)
            for norm in (True, False)}
    calls = _no_forward(vlm, monkeypatch)
    box = logit_lens_explorer(lens[True], lens[False], "tiny", "photo")
    c = box.controls
    labels = [label for label, _ in c["position"].options]
    assert labels[-1].endswith("(last)") and c["position"].value == c["position"].options[-1][1]
    assert len(labels) == len(set(lens[True]["position"])) and c["norm"].options == ("on", "off")
    seen = {box.figure.value}
    for name, value in [("norm", "off"), ("position", c["position"].options[0][1]), ("scale", "log")]:
        c[name].value = value
        assert box.figure.value not in seen, f"moving {name} did not change the figure"
        seen.add(box.figure.value)
    c["norm"].value = "on"
    c["norm"].value = "off"
    assert calls == [] and box.draws == 5 and box.messages.outputs == ()


def test_logit_lens_explorer_over_many_samples_offers_roles(tiny, monkeypatch):
    frame = pd.DataFrame([{"sample": s, "question_type": t, "layer": layer, "position": p + s, "role": r,
                           "tracked": "answer", "token": "yes", "prob": 0.1 * layer, "rank": 0}
                          for s, t in [(0, "A"), (1, "B")] for layer in range(3)
                          for p, r in [(5, "question"), (8, "last")]])
    box = logit_lens_explorer(frame, None, "m", "d")
    assert [v for _, v in box.controls["position"].options] == [("role", "question"), ("role", "last")]
    assert box.controls["position"].value == ("role", "last") and box.controls["norm"].options == ("on",)
    box.controls["qtype"].value = "B"
    assert box.draws == 2 and box.messages.outputs == ()


@functools.cache
def _default_results():
    """The quickstart's example on the embedded default, probed once for the timing test."""
    from analysis import load_vlm
    from analysis.notebook_utils import load_example

    vlm = load_vlm("zoo:shapes-llava", device="cpu")
    example = load_example(seed=0)
    prepared = vlm.prepare(example.image, example.question)
    asked = [{"image": example.image, "question": example.question, "answer": example.answer}]
    return (vlm, example, attention_maps(vlm, prepared, query="question+last", rollout=True),
            information_flow(vlm, asked, window=1, only_correct=False, progress=False),
            {n: logit_lens(vlm, asked, positions=("question", "last"), final_norm=n, progress=False) for n in (True, False)})


def test_each_explorer_redraws_within_a_second_on_the_default_model():
    vlm, example, maps, flow, lens = _default_results()
    explorers = {
        "attention": (attention_explorer(maps, boxes=example.boxes),
                      [("layer", int(maps.layers[1])), ("head", int(maps.heads[0])), ("query", int(maps.query_positions[0])),
                       ("kind", "rollout"), ("view", "grid")]),
        "knockout": (knockout_explorer(flow, vlm.name, example.description), [("edges", ("image->last",))]),
        "logit lens": (logit_lens_explorer(lens[True], lens[False], vlm.name, example.description),
                       [("norm", "off"), ("scale", "log")]),
    }
    for name, (box, moves) in explorers.items():
        for control, value in moves:
            # CPU seconds of this process: what a redraw costs, without the time the other test worker
            # (or anything else on a shared 2-core machine) holds the core
            start = time.process_time()
            box.controls[control].value = value
            seconds = time.process_time() - start
            assert seconds < 1.0, f"{name} explorer: moving {control} took {seconds:.2f} CPU-s"
        assert box.draws == 1 + len(moves) and box.messages.outputs == ()


def test_show_explorers_follows_the_front_end(monkeypatch):
    assert show_explorers(True) and not show_explorers(False)
    assert not show_explorers(None)  # plain Python (pytest): no kernel, no widget front-end

    def kernel_asked_with(allow_stdin):
        request = {"header": {"msg_type": "execute_request"}, "content": {"code": "", "allow_stdin": allow_stdin}}
        shell = SimpleNamespace(kernel=SimpleNamespace(get_parent=lambda channel=None: request))
        monkeypatch.setattr("IPython.get_ipython", lambda: shell)

    kernel_asked_with(True)  # JupyterLab, Notebook, VS Code: a person can answer input()
    assert show_explorers(None) and not show_explorers(False)
    kernel_asked_with(False)  # papermill, nbconvert, nbclient
    assert not show_explorers(None) and show_explorers(True)


def test_threads_for_small_models_on_the_cpu(tiny, monkeypatch):
    import torch

    from analysis import notebook_utils

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        vlm = tiny("llava")
        monkeypatch.setattr(notebook_utils, "SMALL_MODEL_PARAMETERS", 10)  # the tiny model counts as large
        assert notebook_utils.threads_for(vlm) == 2
        monkeypatch.undo()
        assert notebook_utils.threads_for(vlm) == 1
    finally:
        torch.set_num_threads(before)
