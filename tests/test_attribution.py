"""captum attributions against plain forwards on every family's tiny model."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import InputXGradient, Saliency
from conftest import QUESTION, assert_detectable

from analysis.errors import InputError
from analysis.models.answers import answer_tokens
from analysis.models.answers import next_token_logits as last_logits
from analysis.models.sites import hooked
from analysis.probes.attribution import (
    METHODS,
    _index,
    attribute,
    grid_segments,
    resolve_target,
    token_segments,
)
from analysis.probes.runners import EmbeddingRunner, PixelRunner, unmodified
from analysis.probes.sharing import sharing


@contextlib.contextmanager
def replaced_embeddings(vlm, positions, value=0.0):
    """Plain-forward reference: overwrite the language model's input embeddings at ``positions``
    with ``value`` (a number, or ``"mean"``: those embeddings' mean)."""

    def hook(module, args, kwargs):
        embeds = kwargs["inputs_embeds"].clone()
        embeds[:, positions] = embeds[:, positions].mean(1, keepdim=True) if value == "mean" else value
        kwargs["inputs_embeds"] = embeds
        return args, kwargs

    handle = vlm.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


# Scores are differences of log-probabilities; occlusion and baselines are checked against plain
# forwards to this tolerance, and each test asserts that the effect it checks is far larger.
TOL = 1e-5


def logprob(vlm, prepared, token):
    return float(torch.log_softmax(last_logits(vlm, prepared), -1)[token])


def test_maps_have_the_patch_grid_shape_and_finite_values(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    result = attribute(vlm, prepared, method="saliency")
    n_image = len(prepared.image_positions)
    assert result.image_scores.shape == (n_image,) and np.isfinite(result.image_scores).all()
    assert (result.image_scores >= 0).all()  # captum's Saliency: absolute gradients
    for tile, shape in prepared.grids.items():
        grid = result.to_grid(tile)
        assert grid.shape == shape and np.isfinite(grid).all()
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == n_image
    assert list(frame.columns) == ["method", "perturb", "target", "target_token", "feature", "position", "token",
                                   "tile", "row", "col", "kind", "group", "score"]
    assert result.target_token == int(last_logits(vlm, prepared).argmax())


def test_integrated_gradients_completeness(family, tiny, photo):
    """captum's convergence delta is exactly sum(scores) - (f(input) - f(zero baseline)), with f(zero
    baseline) from a plain forward: the baseline is the one documented and no token's score is lost."""
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.warns(UserWarning, match="Integrated Gradients has not converged"):  # 8 steps from zero
        result = attribute(vlm, prepared, method="integrated_gradients", n_steps=8, batch_size=8)
    token = result.target_token
    f_input = logprob(vlm, prepared, token)
    with replaced_embeddings(vlm, prepared.image_positions, 0.0):  # the zero baseline, by a plain forward
        f_baseline = logprob(vlm, prepared, token)
    assert result.target_value == pytest.approx(f_input, abs=TOL)
    assert np.isfinite(result.image_scores).all()
    gap = f_input - f_baseline
    assert result.group_scores.sum() - gap == pytest.approx(result.delta, abs=10 * TOL)
    assert_detectable([gap], 10 * TOL, what="gap f(input) - f(baseline)")


def test_integrated_gradients_without_the_convergence_delta_gives_the_same_scores(tiny, photo):
    """convergence_delta=False skips the delta's two forwards (input and baseline): the same scores bit for
    bit, delta None, no convergence warning (8 steps from zero do not converge, see above)."""
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.warns(UserWarning, match="Integrated Gradients has not converged"):
        checked = attribute(vlm, prepared, method="integrated_gradients", n_steps=8, batch_size=8)
    calls = []
    with warnings.catch_warnings(), hooked(vlm.language_model, pre=lambda args, kwargs: calls.append(1)):
        warnings.simplefilter("error")
        fast = attribute(vlm, prepared, method="integrated_gradients", n_steps=8, batch_size=8,
                         convergence_delta=False)
    assert fast.delta is None and checked.delta is not None
    np.testing.assert_array_equal(fast.group_scores, checked.group_scores)
    assert len(calls) == 2  # the unmodified forward and the 8 steps' batch; the delta adds two


def test_integrated_gradients_converges_with_the_mean_baseline(tiny, photo):
    """With enough steps the scores add up to the gap (completeness). The zero baseline converges
    slowly on RMSNorm models (the norm of a near-zero embedding jumps), the mean baseline fast."""
    vlm = tiny("qwen2_vl")
    prepared = vlm.prepare(photo, QUESTION)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = attribute(vlm, prepared, method="integrated_gradients", features="question", n_steps=64,
                           baseline="mean")
    with replaced_embeddings(vlm, prepared.question_positions, "mean"):
        f_baseline = logprob(vlm, prepared, result.target_token)
    assert result.scores.shape == (len(prepared.question_positions),)
    assert " ".join(t.strip() for t in result.tokens) == QUESTION
    gap = result.target_value - f_baseline
    assert result.scores.sum() == pytest.approx(gap, abs=10 * TOL)
    assert abs(result.delta) <= 10 * TOL
    assert_detectable([gap], 10 * TOL, what="gap f(input) - f(baseline)")


def test_occlusion_of_token_embeddings_equals_a_masked_forward(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    groups = np.full(len(prepared.image_positions), -1)
    j = np.arange(4) + len(groups) // 3  # one group of 4 tokens (one token alone moves PaliGemma's log p by 6e-4)
    groups[j] = 7
    result = attribute(vlm, prepared, method="occlusion", features=groups, perturb="embeddings")
    with replaced_embeddings(vlm, prepared.image_positions[j], 0.0):
        masked = logprob(vlm, prepared, result.target_token)
    assert result.features == "segments" and result.group_scores.shape == (1,)
    assert result.group_scores[0] == pytest.approx(result.target_value - masked, abs=TOL)
    assert_detectable(result.group_scores, TOL, what="occlusion score of 4 tokens")
    assert (result.scores[j] == result.group_scores[0]).all() and np.isnan(np.delete(result.scores, j)).all()


def test_occlusion_of_a_patch_equals_a_forward_on_the_masked_image(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    cells = grid_segments(prepared)
    one_patch = np.where(cells == cells[75, 100], 0, -1)  # the patch under the image centre
    result = attribute(vlm, prepared, method="occlusion", features=one_patch, baseline=(0, 0, 0))
    pixels = np.asarray(photo).copy()
    pixels[one_patch == 0] = 0
    masked = vlm.prepare(pixels, QUESTION)
    assert result.perturb == "pixels" and result.group_scores.shape == (1,)
    assert result.group_scores[0] == pytest.approx(result.target_value - logprob(vlm, masked, result.target_token),
                                                   abs=TOL)
    assert_detectable(result.group_scores, TOL, what="occlusion score of one patch")


def test_every_patch_occluded_in_batches(tiny, photo):
    vlm = tiny("qwen2_vl")
    small = photo.resize((84, 56))  # 3 x 2 image tokens
    prepared = vlm.prepare(small, QUESTION)
    result = attribute(vlm, prepared, method="occlusion", batch_size=4)
    assert result.features == "patches" and result.group_scores.shape == (6,)
    cells = grid_segments(prepared)
    j = 4
    pixels = np.asarray(small).copy()
    mean_colour = np.asarray(small).reshape(-1, 3).mean(0).round()  # the default fill
    pixels[cells == token_segments(prepared, cells)[j]] = mean_colour
    expected = result.target_value - logprob(vlm, vlm.prepare(pixels, QUESTION), result.target_token)
    assert result.image_scores[j] == pytest.approx(expected, abs=TOL)
    assert_detectable([expected], TOL, what="occlusion score of one patch")
    prepared = vlm.prepare(photo, QUESTION)
    batched = attribute(vlm, prepared, method="occlusion", perturb="embeddings", batch_size=16)
    single = attribute(vlm, prepared, method="occlusion", perturb="embeddings", batch_size=1)
    np.testing.assert_allclose(batched.image_scores, single.image_scores, atol=1e-5)


def test_pixel_perturbation_batched_equals_unbatched(family, tiny, photo):
    """Occlusion and KernelSHAP over pixels: B masked images per forward (one processor call, or
    pixel_values built directly) give each perturbation's score as one image per forward does."""
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    rows, cols = prepared.grids[prepared.reference_tile()]
    cells = grid_segments(prepared, block=max(1, -(-max(rows, cols) // 2)))  # at most 2 x 2 cells
    for method, options in (("occlusion", {}), ("kernel_shap", {"n_samples": 6})):
        single = attribute(vlm, prepared, method=method, features=cells, batch_size=1, **options)
        batched = attribute(vlm, prepared, method=method, features=cells, batch_size=4, **options)
        assert single.perturb == batched.perturb == "pixels" and len(single.group_scores) >= 2
        np.testing.assert_allclose(batched.group_scores, single.group_scores, rtol=0, atol=TOL)
    assert_detectable(single.group_scores[np.argsort(-np.abs(single.group_scores))[:1]], TOL,
                      what="largest KernelSHAP score")


def _runner(vlm, prepared, fill=(128, 128, 128)):
    cells = grid_segments(prepared)
    ids = np.unique(cells[cells >= 0])
    token = int(unmodified(vlm, prepared).logits.argmax())
    return PixelRunner(vlm, prepared, token, _index(ids, cells.ravel()).reshape(cells.shape), len(ids), fill)


@pytest.mark.parametrize("model, size, mode", [("zoo:shapes-llava-local", 64, "local"),
                                               ("zoo:shapes-llava", 64, "pixelwise"),
                                               ("zoo:shapes-llava", 80, "processor")])
def test_pixel_runner_shortcuts_equal_the_processor_and_the_whole_model(model, size, mode):
    """The pixel-wise inputs (no resize: the image has the model's input size) and the local
    shortcut (a vision tower whose tokens see only their own patch: the language model alone reruns)
    give the log-probabilities of the processor + whole-model path, and are chosen only where exact."""
    from analysis.data.shapes import make_samples
    from analysis.models import load_vlm

    vlm = load_vlm(model, device="cpu")
    sample = make_samples(1, seed=3)[0]
    prepared = vlm.prepare(sample.image.resize((size, size)), sample.question)
    runner, reference = _runner(vlm, prepared), _runner(vlm, prepared)
    reference._mode = "processor"
    present = torch.from_numpy(np.random.default_rng(0).random((6, runner.n_groups)) < 0.3).float()
    present[0] = 1  # the unmodified image
    with torch.no_grad():
        fast, slow = runner.logprob(present), reference.logprob(present)
    assert runner.mode == mode
    torch.testing.assert_close(fast, slow, rtol=0, atol=TOL)
    assert float(fast[0]) == pytest.approx(float(unmodified(vlm, prepared).logprob(runner.token)), abs=TOL)
    assert_detectable(fast[1:] - fast[0], TOL, what="effect of masking 70% of the patches")


def test_occlusion_of_a_confident_answer_is_the_model_s_not_fp32_rounding():
    """shapes-llava-local answers confidently: most patches move this sample's log-probability by less than
    1e-6, the rounding of an fp32 log_softmax over logits of size ~10. Scores taken from float64
    log-probabilities equal the same model's run in float64 to 1e-8 and rank alike; fp32 log-probabilities
    miss by 1.2e-7 and reorder the small scores (rank correlation 0.992 on this sample)."""
    from analysis.data.shapes import make_samples
    from analysis.models import load_vlm
    from analysis.probes.sanity import rank_correlation

    sample = make_samples(12, seed=0)[8]
    maps = []
    for double in (False, True):
        vlm = load_vlm("zoo:shapes-llava-local", device="cpu")
        if double:
            vlm.model.double()
        prepared = vlm.prepare(sample.image, sample.question)
        maps.append(attribute(vlm, prepared, method="occlusion").scores)
    single, reference = maps
    assert np.median(np.abs(reference)) < 1e-6 and np.abs(reference).max() > 1e-5  # most scores are tiny
    np.testing.assert_allclose(single, reference, rtol=0, atol=1e-8)
    assert rank_correlation(prepared, single, reference) >= 0.9995


def test_methods_share_one_forward_and_one_gradient_with_the_same_results(tiny, photo):
    """Inside sharing(): one unmodified forward for every method and one gradient for Saliency and
    InputXGradient; the maps are those of captum's own classes and of separate calls."""
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    cells = grid_segments(prepared, block=8)  # 9 cells
    options = {m: {"n_steps": 4} if m == "integrated_gradients" else
               {"features": cells, "n_samples": 8} if m in ("occlusion", "kernel_shap") else {} for m in METHODS}
    alone = {m: attribute(vlm, prepared, method=m, **options[m]) for m in METHODS}
    calls = []
    handle = vlm.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with sharing():
            together = {m: attribute(vlm, prepared, method=m, **options[m]) for m in METHODS}
    finally:
        handle.remove()
    for m in METHODS:
        np.testing.assert_array_equal(together[m].scores, alone[m].scores)
    # the whole model runs for the unmodified input, occlusion's 9 cells and KernelSHAP's 8 coalitions
    # (one batch each; the unperturbed input is not rerun); the gradient methods run the language model
    assert len(calls) == 3
    runner = EmbeddingRunner(vlm, prepared, alone["saliency"].target_token)
    positions = prepared.image_positions
    values = runner.embeds[:, positions].clone().requires_grad_(True)

    def forward(x):
        return runner.logprob(positions, x)

    for method, captum_class in (("saliency", Saliency), ("input_x_gradient", InputXGradient)):
        expected = captum_class(forward).attribute(values)[0].sum(-1).detach().numpy()
        np.testing.assert_array_equal(alone[method].scores, expected.astype(float))


def test_sharing_blocks():
    """Outside a block nothing is kept; nested blocks share the outer store unless fresh; a block
    keeps the objects its keys name alive (an id cannot be reused meanwhile)."""
    from analysis.probes.sharing import model_key, shared

    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert shared("k", compute) == 1 and shared("k", compute) == 2
    model, inputs = object(), object()
    with sharing() as store:
        key = ("k", *model_key(model, inputs))
        assert shared(key, compute) == 3
        with sharing():
            assert shared(key, compute) == 3
        with sharing(fresh=True):
            assert shared(key, compute) == 4
        assert shared(key, compute) == 3
        del model, inputs
        assert any(key[1:] == (id(m), id(i)) for m, i in store["__alive__"].values())


def test_kernel_shap_is_seeded_and_covers_segments(tiny, photo):
    vlm = tiny("qwen2_vl")
    prepared = vlm.prepare(photo, QUESTION)
    runs = [attribute(vlm, prepared, method="kernel_shap", perturb="embeddings", n_samples=16, seed=s)
            for s in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0].group_scores, runs[1].group_scores)
    assert not np.array_equal(runs[0].group_scores, runs[2].group_scores)
    segments = grid_segments(prepared, block=3)
    pixels = attribute(vlm, prepared, method="kernel_shap", features=segments, n_samples=8, batch_size=8)
    assert pixels.group_scores.shape == (len(np.unique(segments[segments >= 0])),)
    assert np.isfinite(pixels.image_scores).all()


def test_reference_tile_and_segments(tiny, photo):
    expected = {"llava": 0, "llava_next": 1, "idefics3": 4, "paligemma": 0}
    for family, tile in expected.items():
        prepared = tiny(family).prepare(photo, QUESTION)
        assert prepared.reference_tile() == tile
        cells = token_segments(prepared, grid_segments(prepared))
        sel = ((prepared.patches["tile"] == tile) & (prepared.patches["kind"] == "patch")).to_numpy()
        rows, cols = prepared.grids[tile]
        assert np.array_equal(cells[sel], prepared.patches["row"].to_numpy()[sel] * cols
                              + prepared.patches["col"].to_numpy()[sel])
    prepared = tiny("llava").prepare(photo, QUESTION)
    blocks = grid_segments(prepared, block=8)
    assert set(np.unique(blocks)) == {-1, *range(4)}  # 2 x 2 cells of 8 x 8 patches; the centre crop drops the sides
    assert (blocks[:, :20] == -1).all() and (blocks[:, 30:170] >= 0).all()


def test_targets(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    red = answer_tokens(vlm, prepared.prompt, "red").target
    assert resolve_target(vlm, prepared, "red") == red == resolve_target(vlm, prepared, red)
    result = attribute(vlm, prepared, target="red", method="input_x_gradient", features="question")
    assert result.target_text == "red" and result.target_value == pytest.approx(logprob(vlm, prepared, red), abs=1e-5)
    assert set(result.to_frame()["feature"]) == {"question"}
    image = attribute(vlm, prepared, target=red, method="saliency")
    scores = image.localisation([(100, 0, 200, 75)])
    assert set(scores) == {"share", "ratio", "hit", "area_share"} and 0 < scores["share"] < 1
    assert scores["ratio"] == pytest.approx(scores["share"] / scores["area_share"])


def test_bad_inputs(tiny, photo):
    vlm = tiny("llava")
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.raises(InputError, match="unknown method 'lrp'.*" + ", ".join(METHODS)):
        attribute(vlm, prepared, method="lrp")
    vocab = vlm.lm_head.weight.shape[0]
    with pytest.raises(InputError, match=f"target token id {vocab} is not in the vocabulary"):
        attribute(vlm, prepared, target=vocab, method="saliency")
    with pytest.raises(InputError, match="'xylophone' is not in the vocabulary"):
        attribute(vlm, prepared, target="xylophone", method="saliency")
    with pytest.raises(InputError, match=r"shape \(256,\).*\(150, 200\).*got a int64 array of shape \(16, 16\)"):
        attribute(vlm, prepared, method="saliency", features=np.zeros((16, 16), dtype=np.int64))
    with pytest.raises(InputError, match="integer segment array"):
        attribute(vlm, prepared, method="saliency", features=np.zeros(256))
    with pytest.raises(InputError, match="unknown features"):
        attribute(vlm, prepared, method="saliency", features="pixels")
    with pytest.raises(InputError, match="pixel perturbation needs a pixel segment map"):
        attribute(vlm, prepared, method="occlusion", features=np.arange(256))
    with pytest.raises(InputError, match="question tokens have no pixels"):
        attribute(vlm, prepared, method="occlusion", features="question", perturb="pixels")
    with pytest.raises(InputError, match="perturb applies to occlusion and kernel_shap"):
        attribute(vlm, prepared, method="saliency", perturb="pixels")
    with pytest.raises(InputError, match="unknown baseline"):
        attribute(vlm, prepared, method="integrated_gradients", baseline=(0, 0, 0))
    with pytest.raises(InputError, match="vlm.prepare"):
        attribute(vlm, {"image": photo, "question": QUESTION}, method="saliency")
    with pytest.raises(InputError, match="question tokens"):
        _ = attribute(vlm, prepared, method="saliency", features="question").image_scores
