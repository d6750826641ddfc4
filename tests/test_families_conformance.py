"""Every fully supported family, once each: exactness, the whole probe battery, save -> load_vlm.

The per-probe test modules run on the core families only (``CORE_FAMILIES``, the ``family``
fixture of conftest.py); this module is where every family in ``SUPPORTED_FAMILIES`` (the core
ones and those added since) is checked, each on its tiny model (``analysis.testing.tiny_vlm``):

* exactness (``analysis.conformance``, shared with the families-table test): idle backend = stock
  logits, recorded attention = eager attention on the slice, knockout = plain reference, each to
  1e-5, with the knockout's smallest effect >= 100x that; and the empty edge set = p_base;
* for each family outside the core (whose per-probe modules run every probe on it): a checkpoint
  saved with ``save_pretrained`` loads through ``load_vlm(folder)`` with the same inputs, layout and
  logits, and the loaded model runs the probe battery: attention maps (with rollout), information
  flow, logit lens, capture, implicit alignment and representation shift on two samples, a
  saliency attribution on the patch grid.

Token-level families (no adapter: the generic path, ``analysis.models.adapters.generic``) that
``analysis.testing`` builds a tiny model of (``TOKEN_LEVEL_FAMILIES``) get the same exactness checks
and the same battery (their maps are in sequence order; the figure says the geometry is unknown), plus
steering.

Family-specific attention the backend must leave alone is tested here too (Gemma 3's
bidirectional image block and sliding-window layers), and so are the generic path's refusals by
structure (attention masked by the implementation's name, convolutions over the sequence) and its
decoder-stack lookup. Where a family's layers or head do something ``sites.py`` / ``VLM.unembed``
do not model yet (per-layer inputs, post-norms, residual multipliers or gates, logit scales), the
sites / logit-lens test is a strict xfail that names the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import load_vlm
from analysis.models import SUPPORTED_FAMILIES
from analysis.models.answers import next_token_logits
from analysis.probes.backend import install
from analysis.probes import (attention_maps, attribute, implicit_alignment, information_flow, knockout_probs,
                             logit_lens, representation_shift)
from analysis.capture import capture
from analysis.families import TOLERANCE
from analysis.testing import CORE_FAMILIES, SUPPORTED_TINY_FAMILIES, tiny_vlm
from conftest import QUESTION, assert_detectable, conformance_of

NEW_FAMILIES = tuple(f for f in SUPPORTED_FAMILIES if f not in CORE_FAMILIES)
# Tiny models without a family adapter: the generic token-level path (GOT-OCR2's adapter waits on the backend).
TOKEN_LEVEL_FAMILIES = tuple(f for f in SUPPORTED_TINY_FAMILIES if f not in SUPPORTED_FAMILIES and f != "got_ocr2")


def _samples(n: int = 2) -> list[dict]:
    """``n`` questions on small square random images (one tile for the tiling families: the battery's cost
    stays low; the layouts are checked on the 200 x 150 ``photo``)."""
    rng = np.random.default_rng(3)
    questions = ["what color is the circle ?", "is there a red square ?"]
    return [{"image": Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)), "question": q,
             "answer": "red", "foil": "blue", "id": f"s{i}"} for i, q in enumerate(questions[:n])]


def test_core_families_are_supported_families():
    assert set(CORE_FAMILIES) <= set(SUPPORTED_FAMILIES) and len(NEW_FAMILIES) >= 1


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES + TOKEN_LEVEL_FAMILIES)
def test_exactness(family, tiny, photo):
    result = conformance_of(family)
    assert max(result.idle, result.recorded, result.knockout) <= TOLERANCE, result
    assert_detectable([result.effect], TOLERANCE, what="knockout effect")
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    logits = next_token_logits(vlm, prepared)
    token = int(logits.argmax())
    p_base = torch.softmax(logits.double(), -1)[token]
    assert abs(float(knockout_probs(vlm, prepared, [[]], token)[0]) - float(p_base)) <= TOLERANCE


@pytest.mark.parametrize("family", NEW_FAMILIES + TOKEN_LEVEL_FAMILIES)
def test_saved_checkpoint_loads_and_runs_every_probe(family, tiny, photo, tmp_path):
    """save_pretrained -> load_vlm(folder) gives the same inputs, layout and logits, and the loaded model
    runs the probe battery (the core families run it in the per-probe modules)."""
    original = tiny(family)
    original.model.save_pretrained(tmp_path)
    original.processor.save_pretrained(tmp_path)
    vlm = load_vlm(tmp_path, device="cpu", dtype="float32")
    assert vlm.family == family and type(vlm.model) is type(original.model)
    assert vlm.adapter.geometry == (family in SUPPORTED_FAMILIES)
    prepared, before = vlm.prepare(photo, QUESTION), original.prepare(photo, QUESTION)
    assert torch.equal(prepared.input_ids, before.input_ids) and prepared.patches.equals(before.patches)
    assert (next_token_logits(vlm, prepared) - next_token_logits(original, before)).abs().max() <= TOLERANCE
    n_image = len(prepared.image_positions)
    assert n_image == len(prepared.patches) > 0 and prepared.patches["kind"].eq("patch").sum() > 0
    assert vlm.tokenizer.decode(prepared.input_ids[prepared.question_positions]).strip() == QUESTION

    maps = attention_maps(vlm, prepared, query="question+last", rollout=True)
    n_query = len(prepared.question_positions) + 1
    assert maps.image_attention.shape == (vlm.n_layers, vlm.n_heads, n_query, n_image)
    assert maps.rollout.shape == (vlm.n_layers, n_query, n_image)
    total = maps.mass.groupby(["layer", "head", "query_pos"])["mass"].sum()
    assert np.all(total <= 1 + 1e-5) and np.all(maps.image_attention >= 0)

    samples = _samples()
    flow = information_flow(vlm, samples, blocks=("image->last", "question->last", "image->question"), window=1,
                            only_correct=False, progress=False)
    assert len(flow.frame) == 2 * 3 * vlm.n_layers and flow.frame["p_new"].between(0, 1).all()
    lens = logit_lens(vlm, samples, progress=False)
    assert len(lens[lens["tracked"] == "answer"]) == 2 * vlm.n_layers

    acts = capture(vlm, samples, layers=[-1], roles=["image", "question", "last"], progress=False)
    assert acts.get("last", vlm.n_layers - 1).shape == (2, vlm.hidden_size)
    alignment = implicit_alignment(vlm, samples, text_role="question", progress=False)
    assert len(alignment.scores) > 0 and np.isfinite(alignment.scores["value"].astype(float)).any()
    shift = representation_shift(vlm, tiny_vlm(family, seed=1), samples, layer=-1, n_concepts=2, top_words=2,
                                 top_images=1, progress=False)
    assert shift.base_features.shape == (2, vlm.hidden_size) and len(shift.assignments) == 2

    att = attribute(vlm, prepared, method="saliency")
    assert att.scores.shape == (n_image,) and np.isfinite(att.scores).all() and np.abs(att.scores).max() > 0
    rows, cols = prepared.grids[0]
    assert att.to_grid(0).shape == (rows, cols)
    if not vlm.adapter.geometry:  # token-level: steering works, and the figure says the geometry is unknown
        from analysis.plots import plot_head_overlays
        from analysis.probes.steering import steer

        with torch.no_grad():
            plain = next_token_logits(vlm, prepared)
            with steer(vlm, torch.ones(vlm.hidden_size), layer=0, alpha=5.0):
                steered = next_token_logits(vlm, prepared)
        assert_detectable([(steered - plain).abs().max()], TOLERANCE, what="steering effect")
        assert rows == 1 and cols == n_image and prepared.patches["x0"].isna().all()
        fig = plot_head_overlays(maps, layer=0)
        assert "patch geometry of this model is unknown" in fig._supxlabel.get_text()


def test_gemma3_bidirectional_image_block_and_sliding_window_are_left_alone(tiny, photo):
    """Gemma 3's image tokens attend to later image tokens (token_type_ids 1); a sliding-window layer
    shorter than the prompt keeps its window. The backend, idle or recording, keeps both."""
    vlm = tiny("gemma3")
    prepared = vlm.prepare(photo, QUESTION)
    image = prepared.image_positions
    assert vlm.text_config.layer_types[0] == "sliding_attention" and vlm.text_config.sliding_window < prepared.length
    causal = {k: v for k, v in prepared.inputs.items() if k != "token_type_ids"}
    install(vlm)  # idle: must give the model's own outputs at every position, image block included
    config = vlm.text_config
    installed = config._attn_implementation
    with torch.no_grad():
        idle = vlm.model(**prepared.inputs).logits[0]
        config._attn_implementation_internal = "sdpa"
        try:
            stock = vlm.model(**prepared.inputs).logits[0]
            without = vlm.model(**causal).logits[0]
        finally:
            config._attn_implementation_internal = installed
    assert installed.startswith("vlm_probes") and (idle - stock).abs().max() <= TOLERANCE
    assert_detectable([(stock - without)[image].abs().max()], TOLERANCE, what="effect of the bidirectional image mask")
    first = int(image[0])
    maps = attention_maps(vlm, prepared, query=[first, prepared.last_position])
    later = maps.image_attention[:, :, 0, 1:]  # the first image token's attention to the later ones
    assert (later.sum(-1) > 0.1).all(), "the first image token must see the whole image block"
    window = vlm.text_config.sliding_window
    last_row = maps.image_attention[0, :, 1]  # layer 0 slides: the last query sees only its window
    outside = image.numpy() <= prepared.last_position - window
    assert outside.any() and (last_row[:, outside] == 0).all() and (last_row[:, ~outside] > 0).all()
    assert (maps.image_attention[1, :, 1] > 0).all()  # layer 1 is global


_PER_LAYER_INPUT = pytest.mark.xfail(strict=True, reason=(
    "Gemma 4 decoder layers add a gated per-layer input embedding after the MLP and scale the sum by layer_scalar: "
    "resid_pre + attn_out + mlp_out != resid_post; the fix is in analysis/models/sites.py (a site for the per-layer "
    "input's write, and the scale)"))


_POST_NORM = pytest.mark.xfail(strict=True, reason=(
    "EXAONE 4 decoder layers norm each block's output before the residual add (post_attention_layernorm, "
    "post_feedforward_layernorm) without Gemma's pre_feedforward_layernorm, which analysis/models/sites.py's _SANDWICH "
    "requires as the marker: attn_out / mlp_out are read before those norms; the fix is in sites.py (the pair "
    "post_attention_layernorm + post_feedforward_layernorm marks a post-norm layer on its own)"))
_RESIDUAL_MULTIPLIER = pytest.mark.xfail(strict=True, reason=(
    "Granite decoder layers scale each block's write by residual_multiplier (0.263 in granite-docling) before the "
    "residual add: resid_pre + attn_out + mlp_out != resid_post; the fix is in analysis/models/sites.py (read "
    "attn_out / mlp_out as the scaled write)"))
_RESIDUAL_GATE = pytest.mark.xfail(strict=True, reason=(
    "Muse Spark's decoder layers end each block with a residual gate, alpha * residual + beta * write (learned per "
    "channel): the stream is not the sum of the blocks' writes, resid_pre + attn_out + mlp_out != resid_post; the fix "
    "is in analysis/models/sites.py (sites for the gated write, and the residual's scale)"))
_PERI_LN = pytest.mark.xfail(strict=True, reason=(
    "HyperCLOVA X decoder layers norm each block's output (post_norm1 / post_norm2, names sites.py's _SANDWICH does "
    "not know) and scale it by residual_multiplier before the residual add: resid_pre + attn_out + mlp_out != "
    "resid_post; the fix is in analysis/models/sites.py (read the scaled write after post_norm1 / post_norm2)"))
_SITES_XFAIL = {"gemma4": _PER_LAYER_INPUT, "exaone4_5": _POST_NORM, "granite_docling": _RESIDUAL_MULTIPLIER,
                "muse_spark": _RESIDUAL_GATE, "hyperclovax_vision_v2": _PERI_LN}


@pytest.mark.parametrize("family", [pytest.param(f, marks=_SITES_XFAIL[f]) if f in _SITES_XFAIL else f
                                    for f in NEW_FAMILIES + TOKEN_LEVEL_FAMILIES])
def test_sites_add_up(family, tiny, photo):
    """``resid_pre + attn_out + mlp_out == resid_post`` (Gemma 3 / GLM-4V: read after their sandwich norms) and
    ``resid_post i == resid_pre i+1`` off the image
    (Qwen3-VL's DeepStack adds vision features between layers at image positions only)."""
    from analysis.models.sites import reading

    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    text = torch.ones(prepared.length, dtype=torch.bool)
    text[prepared.image_positions] = False
    kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    with torch.no_grad(), reading(vlm, [f"{k}.{i}" for k in kinds for i in range(vlm.n_layers)]) as states:
        vlm.model(**prepared.inputs)
    got = {(s.kind, s.layer): v[0] for s, v in states.items()}
    for i in range(vlm.n_layers):
        total = got["resid_pre", i] + got["attn_out", i] + got["mlp_out", i]
        assert (total - got["resid_post", i]).abs().max() <= 1e-4, i
        if i + 1 < vlm.n_layers:
            assert torch.equal(got["resid_post", i][text], got["resid_pre", i + 1][text])


_LOGITS_SCALING = pytest.mark.xfail(strict=True, reason=(
    "Granite's causal LM divides the logits by text_config.logits_scaling (4 in granite-docling); VLM.unembed "
    "(analysis/models/vlm.py) does not, so the logit lens is 4x too sharp; the fix is in VLM.unembed (apply the "
    "model's logits_scaling as its head does)"))
_OUTPUT_MULTIPLIER = pytest.mark.xfail(strict=True, reason=(
    "Muse Glimmer's / Spark's head multiplies the logits by text_config.output_multiplier (0.196 / 0.177) before the "
    "soft-cap; "
    "VLM.unembed (analysis/models/vlm.py) applies only the soft-cap; the fix is in VLM.unembed (the same scale first)"))
_LOGITS_SCALING_X = pytest.mark.xfail(strict=True, reason=(
    "HyperCLOVA X's head multiplies the logits by text_config.logits_scaling (0.5 in the tiny model; Granite divides by "
    "the same field); VLM.unembed (analysis/models/vlm.py) does not; the fix is in VLM.unembed"))
_LENS_XFAIL = {"granite_docling": _LOGITS_SCALING, "muse_glimmer": _OUTPUT_MULTIPLIER, "muse_spark": _OUTPUT_MULTIPLIER,
               "hyperclovax_vision_v2": _LOGITS_SCALING_X}


@pytest.mark.parametrize("family", [pytest.param(f, marks=_LENS_XFAIL[f]) if f in _LENS_XFAIL else f
                                    for f in NEW_FAMILIES + TOKEN_LEVEL_FAMILIES])
def test_logit_lens_of_final_is_the_logits(family, tiny, photo):
    """The logit lens (``VLM.unembed``) of the ``final`` site is the model's own logits at every position
    (final soft-capping, Cohere2's logit scale: whatever the model applies)."""
    from analysis.models.sites import reading

    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    with torch.no_grad(), reading(vlm, ["final"]) as states:
        logits = vlm.model(**prepared.inputs).logits[0]
        lens = vlm.unembed(next(iter(states.values()))[0], final_norm=False)
    assert (lens - logits).abs().max() <= TOLERANCE


@pytest.mark.parametrize("family", ["janus", "deepseek_vl"])
def test_padded_square_layout(family, tiny, photo):
    """Janus / DeepSeek-VL pad the resized image to a centred square: the patches whose boxes have no area in the
    original image are exactly those whose pixels are all padding."""
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    pixels = prepared.inputs["pixel_values"][0]
    patch = 384 // 24
    cells = pixels.unfold(1, patch, patch).unfold(2, patch, patch)  # (3, 24, 24, patch, patch)
    flat = cells.flatten(-2).std(-1).amax(0).flatten()  # constant (padding) cells have no spread
    p = prepared.patches
    empty = ((p["x1"] - p["x0"]) * (p["y1"] - p["y0"]) == 0).to_numpy()
    assert empty.sum() == 2 * 3 * 24 and np.array_equal(empty, (flat == 0).numpy())


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma3"])
def test_generic_path_agrees_with_the_family_adapter(family, tiny, photo):
    """Bound to a model that has an adapter, the generic token-level path finds the same image, question and last
    positions and gives the same logits; only the geometry is missing (one 1 x n tile, NaN boxes)."""
    from analysis.models import VLM
    from analysis.models.adapters import TokenLevelAdapter

    vlm = tiny(family)
    generic = VLM(model=vlm.model, processor=vlm.processor, adapter=TokenLevelAdapter(vlm.model, vlm.processor),
                  name=f"generic:{family}")
    a, b = vlm.prepare(photo, QUESTION), generic.prepare(photo, QUESTION)
    assert generic.family == family and not generic.adapter.geometry and vlm.adapter.geometry
    assert torch.equal(a.input_ids, b.input_ids) and (a.roles == b.roles).all()
    assert b.grids == {0: (1, len(b.image_positions))} and b.patches["x0"].isna().all()
    assert torch.equal(next_token_logits(vlm, a), next_token_logits(generic, b))


def test_attention_that_masks_by_implementation_name_is_refused():
    """Sparse-attention indexers that become a mask only under eager / sdpa (Mistral Large 4, HY-V4-VL, dots3, MiniMax
    M3) would attend to every key under the probes' backend: the generic path refuses them by structure, and the
    refusal names the nearest family; the usual dispatch (``!= "eager"``) is not such a branch."""
    from analysis.families import structure
    from analysis.models.adapters import adapter_for
    from analysis.models.adapters.generic import _masks_by_name
    from analysis.errors import UnsupportedModelError

    for model_type in ("mistral_large4", "hy_v4_vl", "dots3_note", "minimax_m3_vl"):
        assert any("changes its mask by the attention implementation's name" in p for p in structure(model_type))
    with pytest.raises(UnsupportedModelError, match=r"'mistral_large4'.*sparse attention.*nearest supported family is "
                                                    r"Mistral 3"):
        adapter_for("mistral_large4")

    class Dispatch(torch.nn.Module):
        def forward(self, x):
            if self.config._attn_implementation != "eager":
                return x
            return x

    class ByName(torch.nn.Module):
        def forward(self, x):
            if self.config._attn_implementation in ("eager", "sdpa"):
                return x
            return x

    class FlashOnly(torch.nn.Module):  # a branch for flash kernels' extra arguments changes no mask here
        def forward(self, x):
            if self.config._attn_implementation in ("flash_attention_2", "flash_attention_3"):
                return x
            return x

    assert not _masks_by_name(Dispatch) and not _masks_by_name(FlashOnly) and _masks_by_name(ByName)


def test_short_convolutions_in_decoder_layers_are_refused():
    """Short causal convolutions over the sequence under any name (Inkling's ``attn_sconv``, Inkling 2's
    ``post_attention_convolution``) mix positions the backend's mask never sees: refused by structure, with the
    nearest family at load."""
    from analysis.families import structure
    from analysis.models.adapters import adapter_for
    from analysis.errors import UnsupportedModelError

    assert any("Conv1d in attn_sconv" in p for p in structure("inkling_mm_model"))
    assert any("Conv1d in post_attention_convolution" in p for p in structure("inkling2"))
    with pytest.raises(UnsupportedModelError, match=r"'inkling2_loop'.*short causal convolutions.*nearest supported "
                                                    r"family is LLaVA-1.5"):
        adapter_for("inkling2_loop")


def test_decoder_stack_inside_a_causal_lm_wrapper():
    """Llama 4's ``get_decoder()`` is its causal LM; the decoder stack (layers, norm) is that wrapper's ``model``, which
    ``VLM.language_model`` and the generic path's structure checks unwrap (Llama 4 stays refused: transformers 5.24's
    forward raises, and the refusal says so)."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from analysis.errors import UnsupportedModelError
    from analysis.families import structure
    from analysis.models.adapters import adapter_for
    from analysis.models.adapters.generic import decoder_stack

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(CONFIG_MAPPING["llama4"]())
    stack = decoder_stack(model)
    assert not hasattr(model.get_decoder(), "layers") and stack is model.get_decoder().model
    assert len(stack.layers) == model.config.text_config.num_hidden_layers and structure("llama4") == []
    with pytest.raises(UnsupportedModelError, match=r"'llama4'.*forward raises on every call"):
        adapter_for("llama4")
    vlm = tiny_vlm("llava")
    assert decoder_stack(vlm.model) is vlm.model.get_decoder() is vlm.language_model


def test_every_token_level_type_has_a_tiny_model():
    """No model type is claimed token-level on its structure alone: each has a tiny model here (so the exactness
    tests and the probe battery above run on it), and the acceptance counts hold (issue 13)."""
    from analysis.families import family_table

    rows = family_table(checks=False)
    token_level = {r["model_type"] for r in rows if r["status"] == "token-level"}
    assert token_level == set(TOKEN_LEVEL_FAMILIES) and all(r["tiny"] for r in rows if r["status"] == "token-level")
    assert len(token_level) + sum(r["status"] == "full" for r in rows) >= 40
