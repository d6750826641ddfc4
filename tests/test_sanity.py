"""Map sanity checks: the randomisation cascade, localisation, deletion, the table and its figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from analysis.errors import InputError  # noqa: E402
from analysis.plots.sanity import FLAG, plot_comparison, plot_method_maps, plot_randomisation  # noqa: E402
from analysis.models.answers import next_token_logits as last_logits  # noqa: E402
from analysis.probes.flow import knockout_probs  # noqa: E402
from analysis.probes.attribution import grid_segments, token_segments  # noqa: E402
from analysis.probes.sanity import (  # noqa: E402
    MapMethod,
    MapSet,
    attention_method,
    attribution_method,
    compute_maps,
    deletion,
    knockout_edges,
    localisation,
    randomisation,
    randomisation_stages,
    rollout_method,
    sanity_report,
    top_patches,
)
from conftest import QUESTION, assert_detectable  # noqa: E402

BOX = (100, 0, 200, 75)  # the photo's top-right quarter


def brightness(vlm, prepared, token):
    """A map that ignores the model: the grey level at each image token's box centre."""
    grey = np.asarray(prepared.image, dtype=float).mean(-1)
    boxes = prepared.patches[["x0", "y0", "x1", "y1"]].to_numpy()
    x = np.clip((boxes[:, 0] + boxes[:, 2]) // 2, 0, grey.shape[1] - 1).astype(int)
    y = np.clip((boxes[:, 1] + boxes[:, 3]) // 2, 0, grey.shape[0] - 1).astype(int)
    return grey[y, x]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def samples(photo):
    return [{"image": photo, "question": QUESTION, "boxes": [BOX], "id": "photo"},
            {"image": photo.transpose(0), "question": "what shape is the object ?", "boxes": [BOX], "id": "mirror"}]


def test_cascade_stages_cover_llm_projector_and_vision_tower(family, tiny):
    vlm = tiny(family)
    stages = randomisation_stages(vlm)
    names = [name for name, _ in stages]
    assert names == [f"LLM layer {i}" for i in reversed(range(vlm.n_layers))] + ["projector", "vision tower"]
    ids = [{id(p) for p in params} for _, params in stages]
    assert all(ids) and sum(map(len, ids)) == len(set().union(*ids))  # non-empty and disjoint


def test_sanity_report_on_a_tiny_model(tiny, samples):
    vlm = tiny("qwen2_vl")
    before = [p.detach().clone() for p in vlm.model.parameters()]
    methods = [attention_method(0), MapMethod("brightness", "input", brightness), attribution_method("saliency")]
    report = sanity_report(vlm, samples[:1], methods, k=3, n_random=4, only_correct=False, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, vlm.model.parameters()))  # randomised a copy

    rand = report.randomisation.set_index(["stage_index", "method"])["rho"]
    assert len(rand) == (vlm.n_layers + 2) * len(methods)
    assert rand[0, "attention L0"] == pytest.approx(1.0)  # layers above 0 do not change layer 0's attention
    assert rand[1, "attention L0"] < 0.99  # ... until layer 0 itself is re-initialised
    assert all(rand[s, "brightness"] == pytest.approx(1.0) for s in range(vlm.n_layers + 2))

    table = report.table.set_index("method")
    assert list(table.index) == [m.name for m in methods]
    assert table.loc["brightness", "survives_randomisation"] and table.loc["brightness", "rho_all"] == pytest.approx(1)
    assert table.attrs["first_stage"] == f"LLM layer {vlm.n_layers - 1}" and table.attrs["last_stage"] == "vision tower"
    assert (table["seconds"] > 0).all() and (table["n_samples"] == 1).all()

    prepared, token = report.maps.prepared[0], report.maps.tokens[0]
    row = report.deletion.set_index(["sample", "method"]).loc[("photo", "brightness")]
    top = top_patches(prepared, report.maps.maps["brightness"][0], 3)
    direct = knockout_probs(vlm, prepared, [[], [knockout_edges(vlm, prepared, top)]], token)
    assert row["p_base"] == pytest.approx(float(torch.softmax(last_logits(vlm, prepared), -1)[token]), abs=1e-6)
    assert row["p_top"] == pytest.approx(float(direct[1]), abs=1e-6)
    assert_detectable([row["p_base"] - row["p_top"]], 1e-6, what="effect of deleting the top patches on p")
    assert row["drop_top"] == pytest.approx(100 * (row["p_base"] - row["p_top"]) / row["p_base"])

    assert len(plot_randomisation(report.randomisation, title="tiny:qwen2_vl").axes) == 1
    fig = plot_comparison(report.table, title="tiny:qwen2_vl")
    assert len(fig.axes) == 5 and "brightness" + FLAG in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    untimed = plot_comparison(report.table, title="tiny:qwen2_vl", timing=False)
    assert [ax.get_xlabel() for ax in untimed.axes] == [ax.get_xlabel() for ax in fig.axes[:4]]
    assert len(plot_method_maps(report.maps, 0).axes) == len(methods) + 1  # panels + colorbar


def test_methods_of_a_sample_share_forwards_with_the_same_maps(tiny, samples):
    """compute_maps shares the unmodified forward, the attention recording and the gradient between
    methods; every map equals the method run alone, and block cells give one score per cell."""
    vlm = tiny("llava")
    methods = [attention_method(0), attention_method(1), rollout_method(1), attribution_method("saliency"),
               attribution_method("input_x_gradient"), attribution_method("occlusion", block=8)]
    maps = compute_maps(vlm, samples[:1], methods, only_correct=False, progress=False)
    prepared, token = maps.prepared[0], maps.tokens[0]
    assert token == int(last_logits(vlm, prepared).argmax())
    for method in methods:
        np.testing.assert_array_equal(maps.maps[method.name][0], method.compute(vlm, prepared, token))
    cells = token_segments(prepared, grid_segments(prepared, block=8))
    occlusion = maps.maps["occlusion"][0]
    for cell in np.unique(cells[cells >= 0]):
        assert len(np.unique(occlusion[cells == cell])) == 1
    assert len(np.unique(occlusion[cells >= 0])) == len(np.unique(cells[cells >= 0])) == 4  # 2 x 2 cells of 8 x 8
    with pytest.raises(InputError, match="block must be a positive integer"):
        attribution_method("occlusion", block=0)
    with pytest.raises(InputError, match="either block or features"):
        attribution_method("occlusion", block=2, features="patches")


def test_randomisation_inside_an_outer_sharing_block_recomputes_every_stage(tiny, samples):
    """The cascade changes weights in place: each stage x sample opens a fresh block, so a block
    the caller holds open cannot hand a later stage an earlier stage's forward."""
    from analysis.probes.sharing import sharing

    vlm = tiny("qwen2_vl")
    methods = [attention_method(0), attribution_method("saliency"), attribution_method("input_x_gradient")]
    maps = compute_maps(vlm, samples[:1], methods, only_correct=False, progress=False)
    alone = randomisation(vlm, maps, progress=False)
    with sharing():
        inside = randomisation(vlm, maps, progress=False)
    np.testing.assert_array_equal(inside["rho"].to_numpy(), alone["rho"].to_numpy())
    assert alone.groupby("stage_index")["rho"].mean().nunique() > 1  # the stages do differ


def test_localisation_of_an_oracle_map(tiny, samples):
    vlm = tiny("llava")
    prepared = vlm.prepare(samples[0]["image"], QUESTION)
    related = np.isin(prepared.patches["position"], prepared.related_positions([BOX]))
    oracle = MapMethod("oracle", "test", lambda *args: related.astype(float))
    outside = MapMethod("outside", "test", lambda *args: (~related).astype(float))
    maps = compute_maps(vlm, samples[:1], [oracle, outside], only_correct=False, progress=False)
    frame = localisation(maps).set_index("method")
    assert frame.loc["oracle", "hit"] and not frame.loc["outside", "hit"]
    assert frame.loc["oracle", "share"] == pytest.approx(1.0)
    assert frame.loc["oracle", "ratio"] == pytest.approx(1 / frame.loc["oracle", "area_share"])


def test_deleting_every_patch_is_the_same_for_any_map(tiny, samples):
    vlm = tiny("qwen2_vl")
    maps = compute_maps(vlm, samples[:1], [MapMethod("brightness", "input", brightness)], only_correct=False,
                        progress=False)
    frame = deletion(vlm, maps, k=1.0, n_random=1)
    assert frame.loc[0, "k"] == len(maps.prepared[0].image_positions)
    assert frame.loc[0, "drop_top"] == pytest.approx(frame.loc[0, "drop_random"], abs=1e-6)


def test_sanity_bad_inputs(tiny, samples):
    vlm = tiny("qwen2_vl")
    method = MapMethod("brightness", "input", brightness)
    with pytest.raises(InputError, match="unique"):
        compute_maps(vlm, samples, [method, method], only_correct=False)
    with pytest.raises(InputError, match=r"returned shape \(3,\); expected \(35,\)"):
        compute_maps(vlm, samples, [MapMethod("short", "test", lambda *a: np.ones(3))], only_correct=False)
    with pytest.raises(InputError, match="needs each sample's answer"):
        compute_maps(vlm, samples, [method])
    with pytest.raises(InputError, match="none of the 1 samples"):
        compute_maps(vlm, [dict(samples[0], answer="zebra")], [method], progress=False)
    maps = compute_maps(vlm, samples[:1], [method], only_correct=False, progress=False)
    with pytest.raises(InputError, match="k must select between 1 and 35"):
        deletion(vlm, maps, k=99)
    with pytest.raises(InputError, match=r"unknown stages \['LLM layer 7'\]"):
        randomisation(vlm, maps, stages=["LLM layer 7"], progress=False)
    no_boxes = MapSet(maps.methods, [maps.samples[0].__class__(image=samples[0]["image"], question=QUESTION)],
                      maps.prepared, maps.tokens, maps.maps)
    with pytest.raises(InputError, match="no ground-truth boxes"):
        localisation(no_boxes)
    with pytest.raises(InputError, match="needs a non-empty frame"):
        plot_comparison(maps.seconds)


def _plain_cascade(vlm, maps, seed=0):
    """The reference: one deep copy randomised stage by stage, every sample after each stage, every
    forward in full (each stage x sample in its own sharing block)."""
    import copy

    import pandas as pd

    from analysis.models import VLM
    from analysis.probes.sanity import rank_correlation, reinitialise
    from analysis.probes.sharing import sharing

    model = copy.deepcopy(vlm.model)
    copied = VLM(model=model.eval(), processor=vlm.processor, adapter=type(vlm.adapter)(model, vlm.processor),
                 name=f"{vlm.name} (randomised)")
    rows = []
    for index, (name, parameters) in enumerate(randomisation_stages(copied)):
        reinitialise(parameters, seed=seed * 1000 + index)
        for i, (sample, prepared, token) in enumerate(zip(maps.samples, maps.prepared, maps.tokens)):
            with sharing(fresh=True):
                computed = [method.compute(copied, prepared, token) for method in maps.methods]
            rows += [{"stage_index": index, "stage": name, "sample": sample.id, "method": method.name,
                      "rho": rank_correlation(prepared, maps.maps[method.name][i], np.asarray(scores, float))}
                     for method, scores in zip(maps.methods, computed)]
    return pd.DataFrame(rows)


def test_cascade_resumes_from_the_original_lower_layers_bit_for_bit(monkeypatch):
    """The decoder stages run one sample at a time with the original weights below their first redrawn
    layer, and the perturbation methods start there from the kept lower-layer states (recorded on the
    original model in sanity_report, at the first stage in randomisation): the frame is the plain
    cascade's, bit for bit and in its order; the kept states were used; a wrong state would show."""
    from analysis.data.shapes import make_samples
    from analysis.models import load_vlm
    from analysis.probes import sanity
    from analysis.probes.lower_states import LowerStates
    from analysis.probes.runners import PixelRunner

    kept = []

    class Kept(LowerStates):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(self)

    monkeypatch.setattr(sanity, "LowerStates", Kept)
    choices, choose = [], PixelRunner._choose  # a runner decides its way of running (processor and model calls)

    def counted(self):
        choices.append(1)
        return choose(self)

    monkeypatch.setattr(PixelRunner, "_choose", counted)
    vlm = load_vlm("zoo:shapes-llava-local", device="cpu")  # patch-local: perturbations run the LLM alone
    methods = [attention_method(1), attribution_method("saliency"), attribution_method("occlusion", block=4),
               attribution_method("kernel_shap", block=4, n_samples=8, batch_size=8)]
    report = sanity_report(vlm, make_samples(2, seed=3), methods, k=3, n_random=2, only_correct=False, progress=False)
    n_samples, n_stages = len(report.maps.samples), len(randomisation_stages(vlm))
    assert len(choices) == n_samples * (1 + 1 + n_stages - vlm.n_layers)  # original, decoder stages, later stages
    reference = _plain_cascade(vlm, report.maps)
    assert report.randomisation.equals(reference)
    from_report = sum(s.resumed for s in kept)  # decoder stages 3, 2, 1 resume (stage 0 redraws layer 0)
    assert from_report > 0
    assert randomisation(vlm, report.maps, progress=False).equals(reference)
    assert (sum(s.resumed for s in kept) - from_report) * 3 == from_report * 2  # there stage 3 records
    # a state from one layer too low changes the maps: the frame check would notice
    states = kept[-1]
    key = next(iter(states.states))
    assert not torch.equal(states.states[key][0], states.states[key][1])


def test_ig_and_occlusion_point_at_the_objects_on_the_patch_local_zoo_model():
    """shapes-llava-local sees an object only through its own patches (exact ground truth)."""
    from analysis.data.shapes import make_samples
    from analysis.models import load_vlm
    from analysis.probes.sanity import compute_maps, default_methods, localisation

    vlm = load_vlm("zoo:shapes-llava-local", device="cpu")
    methods = [m for m in default_methods(vlm, n_steps=32) if m.name in ("IG", "occlusion")]
    maps = compute_maps(vlm, make_samples(42, seed=5), methods, only_correct=True, progress=False)
    assert len(maps.samples) >= 38
    hits = localisation(maps).groupby("method")["hit"].mean()
    assert hits["IG"] >= 0.8 and hits["occlusion"] >= 0.8, hits
