"""What a real checkpoint brings that the tiny models must not hide: stable provenance across
transformers versions, full-width architectures, low-precision numerics."""

from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.capture import capture
from analysis.errors import NumericsError
from analysis.models import VLM
from analysis.models.answers import next_token_logits
from analysis.probes.attention import attention_maps
from analysis.probes.attribution import attribute
from analysis.probes.backend import Edges
from analysis.probes.flow import block_positions, knockout_probs, logit_lens
from analysis.models.digests import config_digest, essential_fields
from analysis.published import PUBLISHED
from analysis.testing import full_width_parts, tiny_parts
from conftest import QUESTION


def test_config_digest_is_the_same_under_every_transformers_version():
    """Digests checked equal under transformers 5.23.0 and 5.24.0 (where a hash of ``to_dict()``
    differed for every one of these configs): only fields that differ from the defaults count."""
    from transformers import AutoConfig

    from analysis.zoo.registry import checkpoint_path

    assert config_digest(AutoConfig.from_pretrained(checkpoint_path("shapes-llava-local"))) == "a9dc8cc06614e8ef"
    model, _ = tiny_parts("llava")
    config = model.config
    assert config_digest(config) == "d1a97d1a20e271ad"
    fields = essential_fields(config)
    assert "transformers_version" not in fields and "use_cache" not in fields["text_config"]  # a default
    assert fields["text_config"]["hidden_size"] == 64
    config.transformers_version = "9.99.0"
    assert config_digest(config) == "d1a97d1a20e271ad"
    config.get_text_config().num_hidden_layers = 3
    assert config_digest(config) != "d1a97d1a20e271ad"


def test_config_digest_of_every_family_with_a_tiny_model(tiny):
    """Every family's config digests, heterogeneous per-layer configs included (Gemma 4 refuses a
    global read of its per-layer attributes): sweeps and figure provenance record it."""
    import copy

    from analysis.testing import SUPPORTED_TINY_FAMILIES

    for family in SUPPORTED_TINY_FAMILIES:
        config = copy.deepcopy(tiny(family).model.config)  # the session's shared model stays as it is
        digest = config_digest(config)
        assert len(digest) == 16 and int(digest, 16) >= 0, family
        config.get_text_config().vocab_size += 1
        assert config_digest(config) != digest, family


# Image-token counts of the real processors, (width, height) -> <image> tokens, worked out from each
# processor's published rules:
#   LLaVA-1.5: 336 / 14 = 24 -> 24 x 24 = 576 for any image (CLS dropped).
#   LLaVA-NeXT any-res: base 576 + the best pinpoint's tiles after unpadding + one newline per row:
#     336 x 336 -> 336 x 672 canvas, 24 x 48 unpadded to 24 x 24: 576 + 24 + 576 = 1176;
#     672 x 672 -> 2 x 2 tiles, 48 x 48: 2304 + 48 + 576 = 2928;
#     1008 x 336 -> 1 x 3 tiles, 24 x 72: 1728 + 24 + 576 = 2328.
#   Qwen2-VL: 448 x 448 -> 32 x 32 patches of 14, merged 2 x 2 -> 256.
#   Idefics3: longest edge to 4 x 364 = 1456, 364 px tiles of 26 x 26 patches, pixel shuffle 2 -> 169
#     per tile; 1456 x 728 -> 4 x 2 tiles + the global one = 9 x 169 = 1521.
#   SmolVLM-256M: longest edge to 2048, 512 px tiles of 32 x 32 patches, shuffle 4 -> 64 per tile;
#     1024 x 512 -> 4 x 2 tiles + global = 9 x 64 = 576.
#   PaliGemma-224: 224 / 14 = 16 -> 256.
IMAGE_TOKENS = {
    "llava": {(336, 336): 576, (640, 480): 576},
    "llava_next": {(336, 336): 1176, (672, 672): 2928, (1008, 336): 2328},
    "qwen2_vl": {(448, 448): 256},
    "qwen2_5_vl": {(448, 448): 256},
    "idefics3": {(1456, 728): 1521},
    "smolvlm": {(1024, 512): 576},
    "paligemma": {(224, 224): 256, (640, 480): 256},
}


def test_full_width_architecture_and_image_token_counts(family, monkeypatch):
    """The published architecture (built on the meta device: shapes without weights) and the real
    processor's image-token counts, through ``prepare`` (inputs kept on the CPU)."""
    published = PUBLISHED[family]
    model, processor = full_width_parts(family, device="meta")
    text = published.text
    layer = model.get_decoder().layers[0]
    head_dim, heads, kv_heads = text["head_dim"], text["num_attention_heads"], text["num_key_value_heads"]
    assert tuple(layer.self_attn.q_proj.weight.shape) == (heads * head_dim, text["hidden_size"])
    assert tuple(layer.self_attn.k_proj.weight.shape) == (kv_heads * head_dim, text["hidden_size"])
    assert tuple(layer.mlp.gate_proj.weight.shape) == (text["intermediate_size"], text["hidden_size"])
    assert model.get_output_embeddings().weight.shape[0] >= text["vocab_size"] >= 32064
    assert len(model.get_decoder().layers) == 2
    monkeypatch.setattr(VLM, "device", property(lambda self: torch.device("cpu")))
    vlm = VLM.from_parts(model, processor, name=f"full:{family}")
    image_token = vlm.adapter.image_token_id
    for (width, height), expected in IMAGE_TOKENS[family].items():
        image = Image.new("RGB", (width, height), (120, 60, 30))
        prepared = vlm.prepare(image, "What colour is the square?")
        assert int((prepared.input_ids == image_token).sum()) == expected, (width, height)
        assert len(prepared.image_positions) == expected
        assert vlm.tokenizer.decode(prepared.input_ids[prepared.question_positions]).strip() == "What colour is the square?"


def _in_dtype(vlm, dtype):
    """The same weights in ``dtype`` (a copy; the session's shared model stays fp32)."""
    return VLM.from_parts(copy.deepcopy(vlm.model).to(dtype), vlm.processor, name=f"{vlm.name}@{dtype}")


# Low precision against the same weights in fp32 (tiny models, peaked outputs): log-probabilities
# of the answer token (knockout, logit lens) and attention weights (fp32 softmax of low-precision
# scores). Worst cases measured over the seven families: bf16 0.107 in log p (qwen2_vl), 0.045 in
# attention (llava_next); fp16 0.071 in log p (llava_next), 0.011 in attention (llava_next).
LOW_PRECISION = {torch.bfloat16: dict(logp=0.25, attention=0.1), torch.float16: dict(logp=0.15, attention=0.03)}


def _battery(model, photo, token: int) -> tuple:
    """Each probe once on ``model`` (photo, QUESTION): the knockout's log p of ``token`` without and with
    image -> last blocked, the logit lens, the last query's attention maps, the capture and saliency."""
    sample = {"image": photo, "question": QUESTION, "id": "s"}
    prepared = model.prepare(photo, QUESTION)
    assert next_token_logits(model, prepared).dtype == torch.float32
    sources, targets = block_positions(prepared, "image->last")
    configs = [[], [Edges.make(sources, targets, range(model.n_layers))]]
    return (knockout_probs(model, prepared, configs, token).double().log(), logit_lens(model, [sample], progress=False),
            attention_maps(model, prepared, query=[-1]), capture(model, [sample], roles=["last"], pool=None, progress=False),
            attribute(model, prepared, target=token, method="saliency"))


_FP32: dict[str, tuple] = {}  # family -> (token, _battery) of the session's fp32 tiny model on photo


def _fp32_battery(tiny, family: str, photo) -> tuple:
    """``_battery`` of the session's fp32 tiny model and its predicted token, once for both dtypes below."""
    if family not in _FP32:
        reference = tiny(family)
        token = int(next_token_logits(reference, reference.prepare(photo, QUESTION)).argmax())
        _FP32[family] = token, _battery(reference, photo, token)
    return _FP32[family]


@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=["bf16", "fp16"])
def test_every_probe_runs_in_low_precision_and_matches_fp32(family, tiny, photo, dtype):
    tol = LOW_PRECISION[dtype]
    token, (knock32, lens32, maps32, _, _) = _fp32_battery(tiny, family, photo)
    knock, lens, maps, acts, saliency = _battery(_in_dtype(tiny(family), dtype), photo, token)
    assert (knock - knock32).abs().max() <= tol["logp"]
    assert (knock32[1] - knock32[0]).abs() >= 4 * tol["logp"]  # the knockout's effect is larger than that
    assert maps.image_attention.dtype == np.float32
    assert np.abs(maps.image_attention - maps32.image_attention).max() <= tol["attention"]
    assert (np.log(lens["prob"]) - np.log(lens32["prob"])).abs().max() <= tol["logp"]
    assert np.isfinite(saliency.image_scores).all() and acts.get("last", 0)[0].dtype == torch.float32


def test_non_finite_outputs_name_the_dtype_and_attention(tiny, photo):
    """fp16 overflow (a residual stream beyond 65504) gives NaN logits: a clear error, not NaN results."""
    vlm = _in_dtype(tiny("llava"), torch.float16)
    vlm.model.get_decoder().layers[0].mlp.down_proj.weight.data *= 3e4
    prepared = vlm.prepare(photo, QUESTION)
    with pytest.raises(NumericsError, match=r"next-token logits of .* not finite .* float16 with attention"):
        next_token_logits(vlm, prepared)
    sources, targets = block_positions(prepared, "image->last")
    # The sweep's one unmodified forward is the first to overflow.
    with pytest.raises(NumericsError, match=r"next-token logits \(unmodified run\) .* dtype='bfloat16'"):
        knockout_probs(vlm, prepared, [[Edges.make(sources, targets, [0])]], 0)
    with pytest.raises(NumericsError, match="captured resid_post"):
        capture(vlm, [{"image": photo, "question": QUESTION}], roles=["last"], layers=[1], pool=None, progress=False)


def test_our_calls_use_nothing_deprecated(family, tiny, photo, caplog):
    """Tomorrow's transformers: no FutureWarning / DeprecationWarning raised at our calls (also set as
    errors for the whole suite in pyproject), and none of transformers' logged deprecations (how it
    announces the removal of ``past_key_values`` in 5.40) on the paths that pass caches, generate,
    rerun the language model or capture."""
    from transformers.utils import logging as hf_logging

    from analysis.capture import generate_answers

    vlm = tiny(family)
    hf_logging.warning_once.cache_clear()  # each deprecation is logged once per process
    sample = {"image": photo, "question": QUESTION, "answer": "red"}
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="transformers"):
        warnings.filterwarnings("error", category=FutureWarning)
        warnings.filterwarnings("error", category=DeprecationWarning, module="(analysis|transformers|torch).*")
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        prepared = vlm.prepare(photo, QUESTION)
        sources, targets = block_positions(prepared, "image->last")
        knockout_probs(vlm, prepared, [[], [Edges.make(sources, targets, [0])]], 0, reuse_prefix=True)
        generate_answers(vlm, [sample], max_new_tokens=2, progress=False)
        capture(vlm, [sample], roles=["last", "answer"], pool="mean", progress=False)
        attribute(vlm, prepared, method="saliency")
        logit_lens(vlm, [sample], progress=False)
    deprecated = [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage().lower()]
    assert not deprecated, deprecated


# Full width in the suite: SmolVLM-256M's published layout (hidden 576, 9 heads over 3 key/value
# heads, head_dim 64, SigLIP-B/16 at 512 px), the one family whose full-width forward costs well
# under a second on 2 cores (LLaVA-1.5-7B's takes 4 s in fp32 and 25 s in bf16 on this CPU, which
# has no bf16 instructions); every family's full-width conformance is in benchmarks/bench_full_width.py.
# Tolerances: fp32 as for the tiny models; bf16 eager attention rounds its probabilities to bf16
# (measured 1.1e-4) and batched bf16 knockouts differ from one-by-one ones by rounding (7.8e-3 in log p).
FULL_WIDTH_TOLERANCE = {torch.float32: dict(idle=1e-5, recorded=1e-5, knockout=1e-5),
                        torch.bfloat16: dict(idle=1e-5, recorded=2e-3, knockout=0.05)}


@pytest.mark.parametrize("dtype", list(FULL_WIDTH_TOLERANCE), ids=["fp32", "bf16"])
def test_full_width_model_passes_the_conformance_checks(dtype):
    from analysis.conformance import conformance
    from analysis.testing import full_width_vlm

    vlm = full_width_vlm("smolvlm", dtype=dtype)
    vlm.processor.image_processor.do_image_splitting = False  # the global 512 px tile: 64 image tokens
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (336, 336, 3), dtype=np.uint8))
    result = conformance(vlm, image, "What colour is the circle?")
    tol = FULL_WIDTH_TOLERANCE[dtype]
    assert (result.n_image, result.dtype) == (64, str(dtype).removeprefix("torch."))
    assert result.idle <= tol["idle"] and result.recorded <= tol["recorded"] and result.knockout <= tol["knockout"]
    assert result.effect >= 10 * tol["knockout"], "a knockout that blocked nothing would pass"


def test_conformance_runs_the_vision_tower_for_stock_idle_and_once_for_the_rest(tiny, photo, monkeypatch):
    """The vision tower's output is shared only after the stock and idle forwards (each computes its
    own, so a backend that disturbed the tower would show), across the model and its eager copy; the
    result is the same as without sharing (and the full-width bf16 test above takes 15 s, not 43)."""
    from analysis import conformance as module

    vlm = tiny("llava")
    tower = type(vlm.model.model.vision_tower)
    calls = []
    forward = tower.forward
    monkeypatch.setattr(tower, "forward", lambda self, *a, **k: calls.append(self) or forward(self, *a, **k))
    shared = module.conformance(vlm, photo, QUESTION)
    # stock, idle, recorded (shared with knockout and reference), then the eager copy's own tower once: its
    # forward passes output_attentions on to get_image_features (LLaVA does), a different request
    assert [c is vlm.model.model.vision_tower for c in calls] == [True, True, True, False]
    assert "get_image_features" not in vars(vlm.model.model)  # the method is the class's again

    monkeypatch.setattr(module, "_image_features_once", lambda *models: contextlib.nullcontext())
    calls.clear()
    alone = module.conformance(vlm, photo, QUESTION)
    assert len(calls) > 3  # without sharing, the later steps (eager copy included) run it again
    for name in ("idle", "recorded", "knockout", "effect"):
        assert getattr(shared, name) == getattr(alone, name), name
