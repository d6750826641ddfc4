"""attention_maps on every family's tiny model: exact vs eager attention, mass, correction, rollout,
sinks, localisation, errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analysis.errors import InputError
from analysis.probes.attention import attention_maps
from analysis.models.localisation import localisation_scores
from analysis.probes.sinks import detect_sinks, robust_z
from conftest import QUESTION, assert_detectable

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
TOL = 1e-5


@dataclass
class Case:
    vlm: object
    prepared: object
    maps: object
    attentions: list  # per layer, (heads, T, T) eager probabilities
    hidden: list  # per layer input, (T, D)


_CASES: dict[str, Case] = {}


def eager_forward(vlm, prepared):
    """Full eager ``output_attentions`` and hidden states; the shared model is restored after."""
    config = vlm.text_config
    saved = config._attn_implementation_internal
    config._attn_implementation_internal = "eager"
    inputs = {k: v for k, v in prepared.inputs.items() if k != "labels"}
    try:
        with torch.no_grad():
            out = vlm.model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    finally:
        config._attn_implementation_internal = saved
    return [a[0].float() for a in out.attentions], [h[0].float() for h in out.hidden_states]


@pytest.fixture
def case(family, tiny, photo) -> Case:
    """Maps for image, question and last queries (rollout on) with the eager reference, per family."""
    if family not in _CASES:
        vlm = tiny(family)
        prepared = vlm.prepare(photo, QUESTION)
        image = prepared.image_positions
        query = image[[0, len(image) // 2, -1]].tolist() + prepared.question_positions.tolist() + [-1]
        maps = attention_maps(vlm, prepared, query=query, rollout=True)
        _CASES[family] = Case(vlm, prepared, maps, *eager_forward(vlm, prepared))
    return _CASES[family]


def test_recorded_attention_equals_eager(case):
    q, image = case.maps.query_positions, case.prepared.image_positions.numpy()
    assert case.maps.image_attention.shape == (case.vlm.n_layers, case.vlm.n_heads, len(q), len(image))
    for i, layer in enumerate(case.maps.layers):
        reference = case.attentions[layer][:, q][:, :, image].numpy()
        np.testing.assert_allclose(case.maps.image_attention[i], reference, rtol=0, atol=TOL)
    assert case.vlm.text_config._attn_implementation.startswith("vlm_probes")
    # Recording another layer, another head or another query would fail: they differ far beyond TOL.
    first, last = (case.attentions[layer][:, q][:, :, image] for layer in (0, case.vlm.n_layers - 1))
    assert_detectable([(first - last).abs().max(), (first[0] - first[1]).abs().max(),
                       (first[:, 0] - first[:, -1]).abs().max()], TOL, what="difference between layers/heads/queries")


def test_mass_splits_each_row_into_image_question_other(case):
    mass = case.maps.mass.pivot_table(index=["layer", "head", "query_pos"], columns="target", values="mass")
    np.testing.assert_allclose(mass.sum(axis=1), 1.0, rtol=0, atol=TOL)
    roles = case.prepared.roles
    for (layer, head, query), row in mass.iterrows():
        probs = case.attentions[layer][head, query].numpy()
        for target in ("image", "question"):
            assert abs(row[target] - probs[roles == target].sum()) <= TOL
        assert abs(row["other"] - probs[(roles != "image") & (roles != "question")].sum()) <= TOL


def test_position_bias_correction_matches_hand_computation(case):
    q, image = case.maps.query_positions, case.prepared.image_positions.numpy()
    visible = q[:, None] >= image[None, :]
    if "token_type_ids" in case.prepared.inputs:  # PaliGemma: the prefix (type 0) is bidirectional
        prefix = (case.prepared.inputs["token_type_ids"][0] == 0).cpu().numpy()
        visible |= prefix[q][:, None] & prefix[image][None, :]
    expected = np.stack([
        case.attentions[layer][:, q][:, :, image].sum(dim=1).numpy() / visible.sum(axis=0) for layer in case.maps.layers
    ])
    np.testing.assert_allclose(case.maps.position_corrected(), expected, rtol=1e-5, atol=TOL)
    uncorrected = expected * visible.sum(axis=0) / len(q)  # the plain mean over queries
    if not visible.all():  # PaliGemma's bidirectional prefix: every query sees every image token
        assert_detectable([np.abs(expected - uncorrected).max()], TOL, what="position-bias correction")


def test_rollout_equals_plain_reference(case):
    T = case.prepared.length
    rollout = torch.eye(T, dtype=torch.float64)
    q, image = case.maps.query_positions, case.prepared.image_positions.numpy()
    for layer, attention in enumerate(case.attentions):
        step = attention.double().mean(dim=0) + torch.eye(T, dtype=torch.float64)
        rollout = (step / step.sum(dim=-1, keepdim=True)) @ rollout
        np.testing.assert_allclose(case.maps.rollout[layer], rollout[q][:, image].numpy(), rtol=0, atol=TOL)
    # The product taken in the reverse order (a plausible bug) differs far beyond TOL.
    reverse = torch.eye(T, dtype=torch.float64)
    for attention in case.attentions:
        step = attention.double().mean(dim=0) + torch.eye(T, dtype=torch.float64)
        reverse = reverse @ (step / step.sum(dim=-1, keepdim=True))
    assert_detectable([(reverse - rollout)[q][:, image].abs().max()], TOL, what="reverse-order rollout difference")


def test_image_norms_equal_output_hidden_states(case):
    image = case.prepared.image_positions.numpy()
    for i, layer in enumerate(case.maps.layers):
        reference = case.hidden[layer][image].norm(dim=-1).numpy()
        np.testing.assert_allclose(case.maps.image_norms[i], reference, rtol=1e-5)
    neighbours = [case.hidden[layer][image].norm(dim=-1) for layer in (0, 1)]
    assert_detectable([((neighbours[0] - neighbours[1]) / neighbours[1]).abs().max()], 1e-5,
                      what="relative difference between adjacent layers' norms")


def test_frame_and_grids_follow_the_arrays(case):
    maps = case.maps
    L, H, Q, I = maps.image_attention.shape
    frame = maps.to_frame()
    assert len(frame) == L * H * Q * I
    row = frame.iloc[-1]
    assert (row["layer"], row["head"], row["query_pos"]) == (maps.layers[-1], maps.heads[-1], maps.query_positions[-1])
    assert row["image_pos"] == case.prepared.image_positions[-1]
    assert row["attention"] == maps.image_attention[-1, -1, -1, -1]
    assert len(maps.to_frame(mean_heads=True)) == L * Q * I
    for tile, (rows, cols) in case.prepared.grids.items():
        assert maps.to_grid(tile).shape == (L, H, rows, cols)
        assert maps.to_grid(tile, kind="rollout").shape == (L, rows, cols)
    last = int(maps.query_positions[-1])
    np.testing.assert_allclose(maps.image_map(layer=0, head=1, query=last), maps.image_attention[0, 1, -1])
    np.testing.assert_allclose(maps.image_map(), maps.image_attention.mean(axis=(0, 1, 2)), rtol=1e-6)


def test_subsets_of_layers_and_heads_equal_the_full_recording(tiny, photo):
    vlm = tiny("qwen2_vl")
    prepared = vlm.prepare(photo, QUESTION)
    full = attention_maps(vlm, prepared, query="question+last")
    part = attention_maps(vlm, prepared, layers=[-1], heads=[3, 1], query="last")
    assert part.layers.tolist() == [vlm.n_layers - 1] and part.heads.tolist() == [1, 3]
    assert part.query_positions.tolist() == [prepared.last_position]
    np.testing.assert_allclose(part.image_attention, full.image_attention[-1:, [1, 3], -1:], rtol=0, atol=1e-7)
    assert set(part.mass["query_role"]) == {"last"}


def test_robust_z_and_sink_detection():
    np.testing.assert_allclose(robust_z([1, 2, 3, 4, 100]), [-2, -1, 0, 1, 97] / np.float64(1.4826))
    np.testing.assert_allclose(robust_z([5, 5, 5, 5, 10]), [0, 0, 0, 0, 5 / (1.2533 * 1)])
    assert not robust_z(np.ones(4)).any()

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"position": np.arange(10, 26), "tile": 0, "row": np.arange(16) // 4,
                          "col": np.arange(16) % 4, "kind": "patch"})
    norms = rng.normal(10, 0.1, (2, 16))
    norms[1, 5] = 40
    shares = np.full((2, 16), 1 / 16)
    shares[0, 9] = 0.5
    sinks = detect_sinks(norms, shares, [3, 7], table)
    assert sinks[["layer", "image_pos", "row", "col", "by"]].values.tolist() == [[3, 19, 2, 1, "attention"],
                                                                                [7, 15, 1, 1, "norm"]]


def test_localisation_scores_of_one_hot_maps(tiny):
    vlm = tiny("llava")  # 224 x 224 image: patches are exactly 14 px squares, 16 x 16
    prepared = vlm.prepare(Image.new("RGB", (224, 224), (90, 90, 90)), QUESTION)
    patches = prepared.patches
    index = {(r, c): i for i, (r, c) in enumerate(zip(patches["row"], patches["col"]))}
    box = (0, 0, 28, 28)  # exactly the 2 x 2 patches of rows 0-1, cols 0-1
    one_hot = np.zeros((3, len(patches)))
    one_hot[0, index[0, 0]] = 1
    one_hot[1, index[10, 10]] = 1
    one_hot[2, [index[1, 1], index[12, 3]]] = [0.75, 0.25]
    scores = localisation_scores(prepared, one_hot, [box])
    assert scores["area_share"] == pytest.approx(4 / 256)
    np.testing.assert_allclose(scores["share"], [1, 0, 0.75])
    np.testing.assert_allclose(scores["ratio"], [64, 0, 48])  # share / (4 / 256)
    assert scores["hit"].tolist() == [True, False, True]
    uniform = localisation_scores(prepared, np.ones(len(patches)), box)
    assert uniform["ratio"] == pytest.approx(1.0)

    class Sample:
        object_boxes = [box]

    assert localisation_scores(prepared, one_hot[0], Sample())["hit"]


def test_localisation_of_maps_has_one_row_per_map(case):
    maps = case.maps
    L, H, Q, _ = maps.image_attention.shape
    box = case.prepared.tile_box(0)
    frame = maps.localisation([box])
    assert len(frame) == L * H * Q and list(frame.columns[:3]) == ["layer", "head", "query_pos"]
    assert len(maps.localisation(box, kind="rollout")) == L * Q
    assert len(maps.localisation(box, kind="corrected")) == L * H


def test_bad_inputs_raise_clear_errors(tiny, photo):
    vlm = tiny("qwen2_vl")
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.raises(InputError, match="layer 2 is out of range"):
        attention_maps(vlm, prepared, layers=[2])
    with pytest.raises(InputError, match="head 4 is out of range"):
        attention_maps(vlm, prepared, heads=4)
    with pytest.raises(InputError, match="unknown query 'answer'"):
        attention_maps(vlm, prepared, query="answer")
    with pytest.raises(InputError, match="query position 1000 is out of range"):
        attention_maps(vlm, prepared, query=[1000])
    with pytest.raises(InputError, match="no query positions"):
        attention_maps(vlm, prepared, query=[])
    maps = attention_maps(vlm, prepared, layers=0, heads=0)
    with pytest.raises(InputError, match="layer 1 was not recorded"):
        maps.image_map(layer=1)
    with pytest.raises(InputError, match="rollout was not computed"):
        maps.to_grid(kind="rollout")
    with pytest.raises(InputError, match="corrected maps have no query axis"):
        maps.image_map(query=prepared.last_position, kind="corrected")
    with pytest.raises(InputError, match="unknown kind"):
        maps.image_map(kind="gradient")
    with pytest.raises(InputError, match="no ground-truth region"):
        maps.localisation(None)
    with pytest.raises(InputError, match="overlaps no image patch"):
        maps.localisation([(5000, 5000, 5100, 5100)])
    with pytest.raises(InputError, match="shape"):
        maps.localisation([(0, 0, 10)])


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl"])
def test_figures_are_labelled(case):
    import matplotlib.pyplot as plt

    from analysis.plots.attention import plot_head_overlays, plot_layer_overlays, plot_mass_heatmap

    maps = case.maps
    last = int(maps.query_positions[-1])
    figures = [plot_head_overlays(maps, 1, query=last), plot_layer_overlays(maps, kind="rollout", normalise=True),
               plot_head_overlays(maps, 0, kind="corrected"), plot_mass_heatmap(maps, ("image", "question", "other"))]
    try:
        for fig in figures:
            assert maps.model_name in fig.get_suptitle() and QUESTION in fig.get_suptitle()
            colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
            assert colorbars and all(ax.get_ylabel() for ax in colorbars)
        assert len(figures[0].axes) == case.vlm.n_heads + 1
        assert figures[0].axes[0].get_title().startswith("head ")
        panels = [ax for ax in figures[3].axes if ax.get_label() != "<colorbar>"]
        assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in panels] == [("head", "layer")] * 3
        with pytest.raises(InputError, match="averages the heads"):
            plot_head_overlays(maps, 0, kind="rollout")
        with pytest.raises(InputError, match="unknown targets"):
            plot_mass_heatmap(maps, ("answer",))
    finally:
        for fig in figures:
            plt.close(fig)
