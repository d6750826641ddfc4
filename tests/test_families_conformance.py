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
decoder-stack lookup. The sites add up and the logit lens of ``final`` is the logits on every family: post-norms
and residual multipliers are read as the write the stream gets, the heads' logit scales are applied as each head
does; where the stream is not a sum of the blocks' writes (Gemma 4's per-layer inputs and ``layer_scalar``, Muse
Spark's residual gates), ``attn_out`` / ``mlp_out`` raise a clear error before any forward.
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
# Tiny models without a family adapter: the generic token-level path.
TOKEN_LEVEL_FAMILIES = tuple(f for f in SUPPORTED_TINY_FAMILIES if f not in SUPPORTED_FAMILIES)


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


# Families whose decoder layers do not make the residual stream a sum of the blocks' writes: attn_out / mlp_out
# raise (analysis.models.sites.block), resid_pre / resid_post stay exact.
_NOT_A_SUM = {
    # a gated per-layer input embedding written after the MLP (a third write), and the sum scaled by layer_scalar
    "gemma4": r"Gemma4TextDecoderLayer\) add 3 writes .* and scale the whole residual stream by layer_scalar",
    # the sum scaled by layer_scalar (1 in the tiny model, learned in the released checkpoints)
    "gemma4_unified": r"Gemma4UnifiedTextDecoderLayer\) scale the whole residual stream by layer_scalar",
    # alpha * residual + beta * write, alpha and beta learned per channel
    "muse_spark": r"gate the residual stream itself \(post_attention_residual_gate\(residual, \.\.\.\)",
}


@pytest.mark.parametrize("family", NEW_FAMILIES + TOKEN_LEVEL_FAMILIES)
def test_sites_add_up(family, tiny, photo):
    """``resid_pre + attn_out + mlp_out == resid_post`` (attn_out / mlp_out: each block's write, read after the norm
    that follows it (Gemma 3, GLM-4V, EXAONE 4, HyperCLOVA X) and times the layer's residual multiplier (Granite,
    HyperCLOVA X)) and ``resid_post i == resid_pre i+1`` off the image (Qwen3-VL's DeepStack adds vision features
    between layers at image positions only). Where the stream is not a sum of writes (``_NOT_A_SUM``), reading
    attn_out / mlp_out raises an error that says why and names the exact sites."""
    from analysis.errors import UnsupportedModelError
    from analysis.models.sites import reading

    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    text = torch.ones(prepared.length, dtype=torch.bool)
    text[prepared.image_positions] = False
    kinds = ("resid_pre", "resid_post") if family in _NOT_A_SUM else ("resid_pre", "attn_out", "mlp_out", "resid_post")
    if family in _NOT_A_SUM:
        for kind in ("attn_out", "mlp_out"):
            with pytest.raises(UnsupportedModelError, match=rf"site '{kind}' is not available for {family}: .*"
                                                            + _NOT_A_SUM[family] + r".*not a sum of the blocks' "
                                                            r"writes.*Use 'resid_pre' / 'resid_post'"):
                with reading(vlm, [f"{kind}.0"]):
                    pass
    with torch.no_grad(), reading(vlm, [f"{k}.{i}" for k in kinds for i in range(vlm.n_layers)]) as states:
        vlm.model(**prepared.inputs)
    got = {(s.kind, s.layer): v[0] for s, v in states.items()}
    with torch.no_grad():
        hidden = vlm.language_model(**_lm_inputs(vlm, prepared), output_hidden_states=True).hidden_states
    for i in range(vlm.n_layers):
        if family not in _NOT_A_SUM:
            total = got["resid_pre", i] + got["attn_out", i] + got["mlp_out", i]
            assert (total - got["resid_post", i]).abs().max() <= 1e-4, i
        if i + 1 < vlm.n_layers:
            assert torch.equal(got["resid_post", i][text], got["resid_pre", i + 1][text])
    assert torch.equal(got["resid_pre", 0], hidden[0][0])


@pytest.mark.parametrize("family", ["granite_docling", "hyperclovax_vision_v2", "exaone4_5"])
def test_edited_write_is_what_the_stream_gets(family, tiny, photo):
    """An edit of attn_out (the scaled, normed write) changes the stream by exactly the edit: under the edit the sites
    still add up, and the read write is the plain one plus the delta (the block's output is set to the new write divided
    by the layer's residual multiplier)."""
    from analysis.models.sites import add, editing, reading, write_scale

    vlm = tiny(family)
    assert (write_scale(vlm, 0, "attn_out") is not None) == (family != "exaone4_5")
    prepared = vlm.prepare(photo, QUESTION)
    names = ["resid_pre.0", "attn_out.0", "mlp_out.0", "resid_post.0"]
    delta = torch.linspace(-1, 1, vlm.hidden_size)
    with torch.no_grad():
        with reading(vlm, names) as plain:
            vlm.model(**prepared.inputs)
        with editing(vlm, {"attn_out.0": add(delta)}), reading(vlm, names) as edited:
            vlm.model(**prepared.inputs)
    plain, edited = ({s.name: v[0] for s, v in states.items()} for states in (plain, edited))
    assert ((edited["attn_out.0"] - plain["attn_out.0"]) - delta).abs().max() <= 1e-5
    total = edited["resid_pre.0"] + edited["attn_out.0"] + edited["mlp_out.0"]
    assert (total - edited["resid_post.0"]).abs().max() <= 1e-4
    assert_detectable([(edited["resid_post.0"] - plain["resid_post.0"]).abs().max()], TOLERANCE, what="edit effect")


def test_block_writes_are_refused_early_where_the_stream_is_not_a_sum(tiny):
    """capture and editing refuse attn_out / mlp_out of Muse Spark before any forward (the error names the exact
    sites); capture of resid_post works."""
    from analysis.errors import UnsupportedModelError
    from analysis.models.sites import ablate, editing

    vlm = tiny("muse_spark")
    samples = _samples(1)
    calls = []
    with torch.no_grad(), _counting_forwards(vlm, calls):
        with pytest.raises(UnsupportedModelError, match=r"site 'mlp_out' is not available for muse_spark.*Use "
                                                        r"'resid_pre' / 'resid_post'"):
            capture(vlm, samples, layers=[0], kinds=["resid_post", "mlp_out"], progress=False)
        with pytest.raises(UnsupportedModelError, match=r"site 'attn_out' is not available for muse_spark"):
            with editing(vlm, {"attn_out.1": ablate()}):
                pass
    assert calls == []
    acts = capture(vlm, samples, layers=[0], kinds=["resid_post"], roles=["last"], progress=False)
    assert acts.get("last", 0).shape == (1, vlm.hidden_size)


def _counting_forwards(vlm, calls):
    from analysis.models.sites import hooked

    return hooked(vlm.language_model, pre=lambda args, kwargs: calls.append(1))


def _lm_inputs(vlm, prepared):
    """The language model's keyword inputs for ``prepared`` (recorded from one forward)."""
    from analysis.models.sites import language_model_inputs

    with torch.no_grad(), language_model_inputs(vlm) as kwargs:
        vlm.model(**prepared.inputs)
    return {k: v for k, v in kwargs.items() if k != "_args"}


@pytest.mark.parametrize("family", NEW_FAMILIES + TOKEN_LEVEL_FAMILIES)
def test_logit_lens_of_final_is_the_logits(family, tiny, photo):
    """The logit lens (``VLM.unembed``) of the ``final`` site is the model's own logits at every position
    (final soft-capping, the head's scales: Granite's / HyperCLOVA X's logits_scaling, Muse's output_multiplier
    before the soft-cap; whatever the model's head applies, and nothing it does not, as Cohere2's logit scale)."""
    from analysis.models.sites import reading

    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    with torch.no_grad(), reading(vlm, ["final"]) as states:
        logits = vlm.model(**prepared.inputs).logits[0]
        lens = vlm.unembed(next(iter(states.values()))[0], final_norm=False)
    assert (lens - logits).abs().max() <= TOLERANCE


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES + TOKEN_LEVEL_FAMILIES)
def test_appended_answer_tokens_keep_every_per_position_input_aligned(family, tiny, photo):
    """``adapter.append`` (teacher-forced answers: ``score``, the capture's ``answer`` role) extends every
    per-position input the processor gave (ERNIE 4.5-VL's ``moe_mm_token_type_ids`` among them): the forward
    runs, and the appended tokens are causal, so the last prompt position's logits are the prompt's own."""
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    answer = [int(t) for t in vlm.tokenizer(" red blue", add_special_tokens=False).input_ids[:2]]
    appended = vlm.adapter.append(prepared.inputs, answer)
    length = prepared.length + len(answer)
    per_position = {k: tuple(v.shape) for k, v in appended.items()
                    if torch.is_tensor(v) and v.dim() >= 2 and v.shape[-1] == prepared.length}
    assert not per_position, f"inputs left at the prompt's length: {per_position}"
    with torch.no_grad():
        logits = vlm.model(**appended).logits[0].float()
    assert logits.shape[0] == length
    assert (logits[prepared.last_position] - next_token_logits(vlm, prepared)).abs().max() <= TOLERANCE


def test_head_scales_are_read_from_the_heads_code():
    """The scales ``VLM.unembed`` applies come from each head's forward, with their operator and place around the
    soft-cap (Granite divides by logits_scaling, HyperCLOVA X multiplies by the same field; Cohere2-Vision's head
    applies no logit_scale although its text config has one)."""
    import transformers

    from analysis.models.vlm import head_scales

    assert head_scales(transformers.GraniteDoclingForConditionalGeneration) == (
        ("/", "config.text_config.logits_scaling", False),)
    assert head_scales(transformers.HyperCLOVAXVisionV2ForConditionalGeneration) == (
        ("*", "config.text_config.logits_scaling", False),)
    assert head_scales(transformers.MuseSparkForConditionalGeneration) == (
        ("*", "config.text_config.output_multiplier", False),)
    assert head_scales(transformers.Cohere2VisionForConditionalGeneration) == ()
    assert head_scales(transformers.Gemma3ForConditionalGeneration) == ()


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


def test_only_the_decoder_stack_must_dispatch_attention():
    """GOT-OCR2's SAM vision tower bypasses AttentionInterface, its Qwen2 decoder does not: the backend and the structure
    checks ask the decoder stack's class (GOT-OCR2 is a full family, tested above); PP-Chart2Table (the same model
    class behind a processor that writes no image tokens) passes the structure checks and is refused by name, with
    GOT-OCR2 as its nearest family."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from analysis.errors import UnsupportedModelError
    from analysis.families import structure
    from analysis.models.adapters import adapter_for
    from analysis.models.adapters.generic import decoder_stack

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(CONFIG_MAPPING["got_ocr2"]())
    assert not model._can_set_attn_implementation() and decoder_stack(model)._can_set_attn_implementation()
    assert structure("got_ocr2") == [] and structure("pp_chart2table") == []
    assert "got_ocr2" in SUPPORTED_FAMILIES
    with pytest.raises(UnsupportedModelError, match=r"'pp_chart2table'.*does not expand the image placeholder.*nearest "
                                                    r"supported family is GOT-OCR2"):
        adapter_for("pp_chart2table")
