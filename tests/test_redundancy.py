"""Visual-token redundancy: masking == physical removal on every family, keep=1.0 == the unmodified
run, rankings, bad inputs, and the ground truth on the patch-local zoo model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from analysis.errors import InputError, UnsupportedModelError
from analysis.models import VLM
from analysis.models.answers import next_token_logits
from analysis.probes.backend import probing
from analysis.probes.redundancy import (
    RANKINGS,
    REDUNDANCY_COLUMNS,
    _order,
    bootstrap_interval,
    cls_attention_scores,
    drop_edges,
    drop_logits,
    drop_region,
    flops_saved,
    last_attention_scores,
    layer_flops,
    n_to_keep,
    oracle_order,
    permute_image_tokens,
    pyramid_drop,
    token_redundancy,
    wilson_interval,
)
from analysis.probes.sharing import sharing
from conftest import QUESTION
from test_families_conformance import NEW_FAMILIES, TOKEN_LEVEL_FAMILIES

TOLERANCE = 1e-5


# --- the reference: dropped tokens' keys and values physically removed -------------------------
_REMOVED: dict = {}
REFERENCE = "redundancy_removal_reference"


def _removal_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The models' own sdpa attention with the dropped positions' keys, values and mask columns cut
    out of the tensors in the chosen layers (no mask trick: they are not there)."""
    if module.layer_idx in _REMOVED["layers"]:
        kept = _REMOVED["kept"].to(key.device)
        key, value = key[:, :, kept], value[:, :, kept]
        attention_mask = attention_mask[..., kept]
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


AttentionInterface.register(REFERENCE, _removal_attention)
AttentionMaskInterface.register(REFERENCE, eager_mask)


def _removed_logits(vlm, prepared, dropped, layers) -> torch.Tensor:
    model = copy.deepcopy(vlm.model)
    model.config.get_text_config()._attn_implementation_internal = REFERENCE
    everything = torch.arange(prepared.length)
    _REMOVED.update(kept=everything[~torch.isin(everything, dropped)], layers=set(layers))
    with torch.no_grad():
        return model(**prepared.inputs).logits[0].float()


@pytest.mark.parametrize("drop_layer", [0, 1])
def test_masking_equals_physical_removal(family, tiny, photo, drop_layer):
    _check_masking_equals_removal(family, tiny(family), photo, drop_layer)


# Gemma 4's soft-capped logits: in fp32 masking and removal differ by rounding alone by up to 1.6e-5
# (1.4e-5 / 1.6e-5 measured); in float64 they agree to 1e-6 (the runner returns fp32 logits).
FLOAT64 = {"gemma4", "gemma4_unified"}


@pytest.mark.parametrize("family", NEW_FAMILIES + TOKEN_LEVEL_FAMILIES)
def test_masking_equals_physical_removal_on_every_supported_family(family, tiny, photo):
    """The same check on every other family with a tiny model (full and token-level), from layer 0."""
    vlm = tiny(family)
    if family in FLOAT64:
        vlm = VLM.from_parts(copy.deepcopy(vlm.model).double(), vlm.processor, name=f"{vlm.name} (float64)")
    _check_masking_equals_removal(family, vlm, photo, 0, tolerance=1e-6 if family in FLOAT64 else TOLERANCE)


def _check_masking_equals_removal(family, vlm, photo, drop_layer, tolerance=TOLERANCE):
    prepared = vlm.prepare(photo, QUESTION)
    image = prepared.image_positions
    dropped = image[torch.randperm(len(image), generator=torch.Generator().manual_seed(0))[: len(image) // 2]]
    layers = range(drop_layer, vlm.n_layers)
    kept = ~torch.isin(torch.arange(prepared.length), dropped)

    with torch.no_grad():
        base = vlm.model(**prepared.inputs).logits[0].float()
        with probing(vlm, block=[[drop_edges(prepared, dropped, layers)]]):
            masked = vlm.model(**prepared.inputs).logits[0].float()
    removed = _removed_logits(vlm, prepared, dropped, layers)

    # the sweep's runner (the knockout engine, vision tower run once) gives the same last-position logits
    config = [drop_edges(prepared, dropped, layers)]
    runner = drop_logits(vlm, prepared, [[], config, config], batch_size=2)
    assert (runner[1] - masked[-1]).abs().max() <= tolerance and (runner[0] - base[-1]).abs().max() <= tolerance
    assert (runner[1] - runner[2]).abs().max() <= tolerance  # across batches

    masked, removed, base = (torch.log_softmax(x[kept], -1) for x in (masked, removed, base))
    error = (masked - removed).abs().max().item()
    effect = (masked - base).abs().max().item()
    assert error <= tolerance, f"{family}: masking differs from removal by {error:.2e}"
    assert effect >= 100 * tolerance, f"{family}: dropping half the image changes log-probs by only {effect:.2e}"


def test_keep_one_is_the_unmodified_run_and_the_frame(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    logits = next_token_logits(vlm, prepared)
    predicted = int(logits.argmax())
    answer = vlm.tokenizer.decode([predicted]).strip()
    box = (25, 0, 60, 40)
    sample = {"image": photo, "question": QUESTION, "answer": answer, "boxes": [box], "options": ("a", "b")}
    result = token_redundancy(vlm, [sample], drop_layers=(0, 1), keep=(1.0, 0.5, 0.1),
                              rank_by=("last_attention", "random", "oracle"), progress=False)
    frame = result.frame
    assert list(frame.columns) == REDUNDANCY_COLUMNS
    assert result.skipped == [{"sample": 0, "ranking": "last_attention", "drop_layer": 0,
                               "reason": "no layer before layer 0 to rank by"}]
    assert len(frame) == (1 + 2 + 2) * 3  # last_attention only at layer 1
    full = frame[frame["keep"] == 1.0]
    p_base = float(torch.softmax(logits, -1)[predicted])
    assert np.allclose(full["p_new"], p_base, atol=1e-6, rtol=0) and full["same_prediction"].all()
    assert (full["flops_saved"] == 0).all() and (full["correct"] == 1).all() and (full["change"].abs() < 1e-3).all()
    n_image = len(prepared.image_positions)
    assert (frame["n_kept"] == [n_to_keep(k, n_image) for k in frame["keep"]]).all()
    assert (frame["chance"] == 0.5).all()
    # dropping 90% of the image tokens changes the answer's probability on a random model too
    assert frame.loc[frame["keep"] == 0.1, "change"].abs().max() > 0.1
    # fewer tokens and an earlier drop save more
    rnd = frame[frame["ranking"] == "random"].set_index(["drop_layer", "keep"])["flops_saved"]
    assert rnd[0, 0.1] > rnd[0, 0.5] > 0 and rnd[0, 0.1] > rnd[1, 0.1] > 0
    # the oracle keeps the related patches first
    related = len(prepared.related_positions([box]))
    oracle = frame[frame["ranking"] == "oracle"]
    assert (oracle["related_kept"] == np.minimum(oracle["n_kept"], related)).all()
    # seeded: the same call gives the same frame
    again = token_redundancy(vlm, [sample], drop_layers=(0, 1), keep=(1.0, 0.5, 0.1),
                             rank_by=("last_attention", "random", "oracle"), progress=False)
    assert again.frame.equals(frame)


def test_select_is_the_sweep_of_those_axes(tiny, photo):
    vlm = tiny("llava")
    sample = {"image": photo, "question": QUESTION, "answer": "a", "boxes": [(25, 0, 60, 40)]}
    axes = dict(drop_layers=(0, 1), rank_by=("last_attention", "random", "oracle"), progress=False)
    sweep = token_redundancy(vlm, [sample], keep=(1.0, 0.5, 0.1), **axes)
    alone = token_redundancy(vlm, [sample], keep=(0.1,), **axes)
    chosen = sweep.select(keep=0.1)
    assert chosen.keep == (0.1,) and chosen.rankings == alone.rankings and chosen.skipped == alone.skipped
    exact = [c for c in REDUNDANCY_COLUMNS if c not in ("p_new", "change")]
    assert chosen.frame[exact].equals(alone.frame[exact])  # rows, order, rankings, kept tokens, greedy answers
    assert np.allclose(chosen.frame["p_new"], alone.frame["p_new"], atol=1e-6, rtol=0)
    assert not np.allclose(chosen.frame["p_new"], sweep.frame.query("keep == 0.5")["p_new"], atol=1e-3)
    one = sweep.select(rankings="random", drop_layers=1)
    assert set(one.frame["ranking"]) == {"random"} and set(one.frame["drop_layer"]) == {1}
    assert len(one.frame) == 3 and one.skipped == []  # last_attention's skip at layer 0 is not selected
    with pytest.raises(InputError, match=r"no keep \[0.2\]"):
        sweep.select(keep=0.2)
    with pytest.raises(InputError, match="no ranking"):
        sweep.select(rankings="cls_attention")


def test_cls_attention_and_attribution_rankings(tiny, photo):
    vlm = tiny("llava")
    result = token_redundancy(vlm, [{"image": photo, "question": QUESTION}], drop_layers=(0,), keep=(0.25,),
                              rank_by=("cls_attention", "attribution"),
                              attribution={"method": "saliency"}, progress=False)
    assert set(result.frame["ranking"]) == {"cls_attention", "attribution"}
    assert result.frame["correct"].isna().all()  # no gold answer
    for family in ("qwen2_vl", "paligemma", "llava_onevision"):  # SigLIP-like towers: no CLS
        with pytest.raises(UnsupportedModelError, match="no \\[CLS\\] token"):
            token_redundancy(tiny(family), [{"image": photo, "question": QUESTION}], rank_by="cls_attention",
                             drop_layers=(0,), progress=False)
    with pytest.raises(UnsupportedModelError, match="layout is not mapped"):  # CLIP, five layers concatenated
        token_redundancy(tiny("vipllava"), [{"image": photo, "question": QUESTION}], rank_by="cls_attention",
                         drop_layers=(0,), progress=False)


def _reference_cls_scores(vlm, prepared, feature_layer: int, tile_order=None) -> np.ndarray:
    """[CLS] attention per image token, computed apart from the module: an eager copy of the vision
    tower run on each tile alone, the head-averaged [CLS] row over the patches in ``feature_layer``,
    placed at the image positions by the model's own packing (``pack_image_features``: overview, then
    the unpadded tile grid with NaN for the newlines). ``tile_order`` permutes the tiles' rows (a
    deliberately wrong mapping)."""
    tower = copy.deepcopy(vlm.model.model.vision_tower)
    tower.config._attn_implementation_internal = "eager"
    pixel_values, image_sizes = prepared.inputs["pixel_values"], prepared.inputs["image_sizes"]
    config = vlm.model.config
    n_tiles = image_size_to_num_patches(image_sizes[0].tolist(), config.image_grid_pinpoints,
                                        config.vision_config.image_size)
    layer = config.vision_config.num_hidden_layers + feature_layer if feature_layer < 0 else feature_layer - 1
    rows = []
    with torch.no_grad():
        for t in range(n_tiles):
            attentions = tower(pixel_values[0, t:t + 1], output_attentions=True).attentions
            assert len(attentions) == config.vision_config.num_hidden_layers
            rows.append(attentions[layer][0, :, 0, 1:].double().mean(0))
    rows = torch.stack(rows)
    if tile_order is not None:
        rows = rows[list(tile_order)]
    packed, _ = vlm.model.model.pack_image_features([rows[..., None]], image_sizes, "default",
                                                     image_newline=torch.tensor([math.nan], dtype=torch.float64))
    return packed[0][:, 0].numpy()


@pytest.mark.parametrize("family", ["llava_next", "llava_next_video"])
def test_cls_attention_on_any_res_tiles_equals_a_per_tile_reference(tiny, photo, family):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    image = prepared.image_positions
    scores = cls_attention_scores(vlm, prepared)
    reference = _reference_cls_scores(vlm, prepared, vlm.model.config.vision_feature_layer)
    newline = (prepared.patches["kind"] == "newline").to_numpy().copy()
    assert scores.shape == reference.shape == (len(image),) and newline.sum() > 0
    assert np.array_equal(np.isnan(scores), newline) and np.array_equal(np.isnan(reference), newline)
    error = np.nanmax(np.abs(scores - reference))
    assert error <= 1e-7, f"{family}: [CLS] scores differ from the per-tile reference by {error:.2e}"
    assert torch.equal(_order(scores, image), _order(reference, image))
    assert (_order(scores, image)[-newline.sum():] == image[torch.from_numpy(newline)]).all()  # unscored: last

    # The reference notices a wrong mapping or a wrong layer: both change the scores and the ranking.
    n_tiles = int(prepared.inputs["pixel_values"].shape[1])
    assert n_tiles >= 3  # the photo gives an overview and two high-resolution tiles
    swapped = list(range(n_tiles))
    swapped[1], swapped[2] = 2, 1
    for wrong in (_reference_cls_scores(vlm, prepared, vlm.model.config.vision_feature_layer, swapped),
                  _reference_cls_scores(vlm, prepared, -1)):  # the tiny tower's 2 layers: -2 is the first
        assert np.nanmax(np.abs(scores - wrong)) >= 100 * error + 1e-5
        assert not torch.equal(_order(scores, image), _order(wrong, image))

    # End to end: the sweep drops the lowest-scored tokens (newlines first), as the scores say.
    sample = {"image": photo, "question": QUESTION}
    result = token_redundancy(vlm, [sample], drop_layers=(0, 1), keep=(1.0, 0.25), rank_by=("cls_attention", "random"),
                              progress=False)
    frame = result.frame.set_index(["ranking", "drop_layer", "keep"])
    assert len(frame) == 2 * 2 * 2 and (frame["n_image"] == len(image)).all()
    assert np.allclose(frame.xs(1.0, level="keep")["p_new"], frame["p_base"].iloc[0], atol=1e-6, rtol=0)
    order = _order(scores, image)
    n_kept = n_to_keep(0.25, len(image))
    with sharing(fresh=True):
        expected = drop_logits(vlm, prepared, [[drop_edges(prepared, order[n_kept:], range(k, vlm.n_layers))]
                                               for k in (0, 1)])
    predicted = int(next_token_logits(vlm, prepared).argmax())
    expected = torch.softmax(expected, -1)[:, predicted].numpy()
    got = frame.loc[("cls_attention", [0, 1], 0.25), "p_new"].to_numpy()
    assert np.abs(got - expected).max() <= TOLERANCE
    assert (frame.loc[("cls_attention", [0, 1], 0.25), "p_new"].to_numpy()
            != frame.loc[("random", [0, 1], 0.25), "p_new"].to_numpy()).all()


def test_oracle_order_round_robin_by_coverage():
    """Two objects: the most covered patch of each comes first, then the unrelated tokens."""
    import pandas as pd

    from analysis.models.inputs import PreparedInputs

    cells = [(r, c) for r in range(4) for c in range(4)]
    patches = pd.DataFrame({"position": np.arange(16) + 2, "tile": 0, "row": [r for r, _ in cells],
                            "col": [c for _, c in cells], "kind": "patch",
                            "x0": [8.0 * c for _, c in cells], "y0": [8.0 * r for r, _ in cells],
                            "x1": [8.0 * c + 8 for _, c in cells], "y1": [8.0 * r + 8 for r, _ in cells]})
    roles = np.array(["other", "other"] + ["image"] * 16 + ["question", "last"])
    prepared = PreparedInputs(inputs={"input_ids": torch.zeros(1, 20, dtype=torch.long)}, image=None, question="q",
                              prompt="q", roles=roles, patches=patches, grids={0: (4, 4)})
    boxes = [(0, 0, 12, 8), (24, 24, 32, 32)]  # covers cell (0,0) fully and (0,1) half; cell (3,3)
    order = oracle_order(prepared, boxes, rng=np.random.default_rng(0)).tolist()
    assert order[:3] == [2, 17, 3] and sorted(order) == list(range(2, 18))


def test_region_pyramid_and_permutation(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    answer = vlm.tokenizer.decode([int(next_token_logits(vlm, prepared).argmax())]).strip()
    sample = {"image": photo, "question": QUESTION, "answer": answer, "boxes": [(25, 0, 60, 40)]}
    region = drop_region(vlm, [sample], drop_layers=(0, 1), progress=False)
    assert len(region.frame) == 4 and set(region.frame["dropped"]) == {"related", "other"}
    assert (region.frame.groupby("drop_layer")["n_dropped"].nunique() == 1).all()

    pyramid = pyramid_drop(vlm, [sample], ratios=(1.0, 0.5), stages=(1,), progress=False).set_index("ratio")
    n_image = len(prepared.image_positions)
    assert pyramid.loc[1.0, "n_kept_final"] == n_image and pyramid.loc[1.0, "p_new"] == pytest.approx(
        pyramid.loc[1.0, "p_base"], abs=1e-6)
    assert pyramid.loc[0.5, "n_kept_final"] == n_to_keep(0.5, n_image)
    assert pyramid.loc[0.5, "flops_saved"] == pytest.approx(
        flops_saved(vlm, prepared.length, [0, n_image - n_to_keep(0.5, n_image)]))

    permuted = permute_image_tokens(vlm, [sample], n_permutations=2, seed=3, progress=False)
    assert len(permuted) == 2 and (permuted["n_permuted"] == n_image).all()
    assert permuted["p_new"].nunique() == 2 and (permuted["p_new"] != permuted["p_base"]).all()
    assert permute_image_tokens(vlm, [sample], n_permutations=2, seed=3, progress=False).equals(permuted)


def test_last_attention_resumed_from_the_unmodified_run_is_the_full_forwards(family, tiny, photo):
    """With the unmodified run, the recording runs the language model alone from the lowest recorded or
    blocked layer up to the highest recorded one: the same attention as a full forward, with and without
    a drop below the recorded layer (PyramidDrop's later stages)."""
    from analysis.probes.knockout import unmodified_run

    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    run = unmodified_run(vlm, prepared, 0)
    top = vlm.n_layers - 1
    dropped = drop_edges(prepared, prepared.image_positions[::2], range(1, vlm.n_layers))
    for layers, block in (([top], ()), ([0, top], ()), ([top], (dropped,))):
        full = last_attention_scores(vlm, prepared, layers, block)
        resumed = last_attention_scores(vlm, prepared, layers, block, unmodified=run)
        for layer in layers:
            np.testing.assert_allclose(resumed[layer], full[layer], rtol=0, atol=1e-6)
    # The drop and the layer each change the recording far beyond the tolerance.
    plain = last_attention_scores(vlm, prepared, [0, top], unmodified=run)
    with_drop = last_attention_scores(vlm, prepared, [top], (dropped,), unmodified=run)[top]
    assert np.abs(with_drop - plain[top]).max() > 100 * 1e-6
    assert np.abs(plain[0] - plain[top]).max() > 100 * 1e-6


def test_flops_saved_is_analytic(tiny):
    vlm = tiny("llava")
    d, h, kv, dh, m = 64, 4, 2, 16, 128  # analysis.testing's tiny text sizes
    assert layer_flops(vlm, 10) == 2 * 10 * d * (h * dh + 2 * kv * dh) + 2 * 10 * h * dh * d + 4 * 100 * h * dh + 2 * 10 * d * m * 3
    assert flops_saved(vlm, 100, [0, 0]) == 0
    assert flops_saved(vlm, 100, [50, 50]) == pytest.approx(100 * (1 - layer_flops(vlm, 50) / layer_flops(vlm, 100)))
    low, high = wilson_interval(0, 10)
    assert low == 0 and 0.25 < high < 0.35 and math.isnan(wilson_interval(0, 0)[0])


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(0).normal(1.0, 2.0, size=400)
    mean, low, high = bootstrap_interval(values, seed=3)
    assert mean == pytest.approx(values.mean()) and low < mean < high
    assert high - low == pytest.approx(2 * 1.96 * values.std(ddof=1) / 20, rel=0.15)  # the normal interval
    assert bootstrap_interval(values, seed=3) == (mean, low, high)
    assert bootstrap_interval([2.0, 2.0, np.nan]) == (2.0, 2.0, 2.0)
    assert math.isnan(bootstrap_interval([1.0])[1]) and math.isnan(bootstrap_interval([])[0])


def test_bad_inputs_give_clear_errors(tiny, photo):
    vlm = tiny("llava")
    ok = [{"image": photo, "question": QUESTION}]
    cases = [
        (dict(rank_by="fastv"), "unknown ranking"),
        (dict(keep=(1.5,)), "keep fractions must lie in"),
        (dict(drop_layers=(7,)), "out of range"),
        (dict(drop_layers=()), "at least one drop layer"),
        (dict(rank_by="oracle"), "ground-truth boxes"),
        (dict(only_correct=True), "needs each sample's answer"),
        (dict(batch_size=0), "batch_size"),
        (dict(rank_by="last_attention", drop_layers=(0,)), "does not exist for K = 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            token_redundancy(vlm, ok, progress=False, **kwargs)
    with pytest.raises(InputError, match="no boxes"):
        drop_region(vlm, ok, progress=False)
    with pytest.raises(InputError, match="ratios must lie"):
        pyramid_drop(vlm, ok, ratios=(0.0,), progress=False)
    with pytest.raises(InputError, match="stages"):
        pyramid_drop(vlm, ok, stages=(0,), progress=False)
    with pytest.raises(InputError, match="n_permutations"):
        permute_image_tokens(vlm, ok, n_permutations=0, progress=False)


def test_ground_truth_on_the_patch_local_zoo_model():
    """shapes-llava-local sees an object only through its own patches. Dropping those tokens from
    layer 0 must bring accuracy to chance; dropping as many other tokens must not matter; keeping
    10% of the tokens, the ground-truth order must beat every model-derived and random one."""
    from analysis.data.shapes import make_samples
    from analysis.models import load_vlm

    vlm = load_vlm("zoo:shapes-llava-local", device="cpu")
    samples = make_samples(140, seed=7)
    chance = float(np.mean([1 / len(s.options) for s in samples]))

    region = drop_region(vlm, samples, drop_layers=(0,), progress=False).frame
    base = region.groupby("sample")["correct_base"].first().mean()
    related = region.loc[region["dropped"] == "related", "correct"]
    low, high = wilson_interval(related.sum(), len(related))
    assert base >= 0.95
    assert low <= chance <= high, f"related dropped: {related.mean():.3f} [{low:.3f}, {high:.3f}], chance {chance:.3f}"
    other = region.loc[region["dropped"] == "other", "correct"].mean()
    assert other >= base - 0.03

    result = token_redundancy(vlm, samples, drop_layers=(0, 1), keep=(0.1,), rank_by=RANKINGS,
                              attribution={"n_steps": 8}, progress=False)
    accuracy = result.frame.groupby(["drop_layer", "ranking"])["correct"].agg(["sum", "count", "mean"])
    # From layer 1 (where every ranking is defined, last_attention reading layer 0) the oracle beats all.
    at_1 = accuracy.loc[1, "mean"]
    assert (at_1["oracle"] > at_1.drop("oracle")).all(), at_1.to_dict()
    # At the input (layer 0) it beats [CLS] attention and random by 10+ points; the model's own attribution
    # ties it (within the oracle's 95% interval): the model reads the objects where the ground truth says.
    at_0 = accuracy.loc[0]
    assert (at_0.loc["oracle", "mean"] - at_0.loc[["cls_attention", "random"], "mean"] >= 0.10).all(), at_0.to_dict()
    low, high = wilson_interval(at_0.loc["oracle", "sum"], int(at_0.loc["oracle", "count"]))
    assert low <= at_0.loc["attribution", "mean"] <= high, at_0.to_dict()


def test_one_unmodified_forward_serves_the_base_the_drops_and_the_attribution(tiny, photo):
    """drop_logits resumes from the knockout engine's unmodified run, which inside a sharing() block is
    also the attribution ranking's unmodified forward: the same values as its own, and the vision tower
    runs once per sample in a sweep with the attribution ranking."""
    from analysis.probes.redundancy import _unmodified_run, _vision_tower
    from analysis.probes.runners import unmodified

    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    own = unmodified(vlm, prepared)  # outside a block: its own forward
    with sharing(fresh=True):
        run = _unmodified_run(vlm, prepared)
        seeded = unmodified(vlm, prepared)
        assert seeded is not own and _unmodified_run(vlm, prepared) is run
    assert torch.equal(seeded.logits, own.logits) and torch.equal(seeded.logits, run.logits)
    assert torch.equal(seeded.embeds, own.embeds) and seeded.kwargs.keys() == own.kwargs.keys()
    for key, value in own.kwargs.items():
        assert torch.equal(seeded.kwargs[key], value) if torch.is_tensor(value) else seeded.kwargs[key] == value, key

    calls = []
    hook = _vision_tower(vlm).register_forward_hook(lambda *args: calls.append(1))
    try:
        samples = [{"image": photo, "question": QUESTION}, {"image": photo.rotate(90), "question": QUESTION}]
        token_redundancy(vlm, samples, drop_layers=(0, 1), keep=(0.5,), rank_by=("attribution", "random"),
                         attribution={"method": "saliency"}, progress=False)
    finally:
        hook.remove()
    assert len(calls) == len(samples)
