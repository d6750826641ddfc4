"""One answers module: answer tokens, the target token, scores, generation and the correctness rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from analysis.errors import InputError
from analysis.models.answers import (answer_tokens, choose_option, choose_options, generate, is_correct,
                                     is_correct_option, next_token_logits, score)
from conftest import QUESTION


@pytest.fixture(scope="module")
def piece_vlm():
    """A stand-in VLM whose SentencePiece-style tokenizer splits " 2" into "▁" + "2" and " yellow"
    into "▁yel" + "low", as Llama-2's does for digits."""
    vocab = [("<unk>", 0.0), ("▁", -2.0), ("2", -3.0), ("▁yes", -1.0), ("▁Yes", -1.0), ("▁a", -1.0),
             ("▁above", -1.0), ("▁yel", -2.0), ("low", -2.0), ("▁yellow", -9.0), ("▁ok", -1.0), (":", -1.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    from tokenizers import decoders

    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return SimpleNamespace(tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>"))


def test_target_token_is_never_a_bare_space_piece(piece_vlm):
    ids = piece_vlm.tokenizer.convert_tokens_to_ids
    two = answer_tokens(piece_vlm, "ok:", "2")
    assert two.ids == (ids("▁"), ids("2")) and two.target == ids("2")
    yellow = answer_tokens(piece_vlm, "ok:", "yellow")
    assert yellow.target == yellow.ids[0] == ids("▁yel")
    assert answer_tokens(piece_vlm, "ok: ", "yes").target == ids("▁yes")
    with pytest.raises(InputError, match="non-empty"):
        answer_tokens(piece_vlm, "ok:", " ")


def test_the_first_token_rule_on_sub_word_pieces(piece_vlm):
    ids = piece_vlm.tokenizer.convert_tokens_to_ids
    two, yes, above, yellow = (answer_tokens(piece_vlm, "ok:", a) for a in ("2", "yes", "above", "yellow"))
    assert is_correct(piece_vlm, two, predicted=ids("2"))
    assert not is_correct(piece_vlm, two, predicted=ids("▁")), "a bare space piece answers nothing"
    assert is_correct(piece_vlm, yes, predicted=ids("▁Yes")), "case does not matter"
    assert not is_correct(piece_vlm, above, predicted=ids("▁a")), "a shorter word is not the answer"
    assert is_correct(piece_vlm, yellow, predicted=ids("▁yellow")), "a longer piece that carries the answer is"
    assert not is_correct(piece_vlm, yes, predicted=ids("▁ok"))
    assert is_correct(piece_vlm, yes, generated="Yes, there is.") and not is_correct(piece_vlm, yes, generated="no")
    with pytest.raises(InputError, match="exactly one"):
        is_correct(piece_vlm, yes)


def test_the_options_rule_picks_the_best_option_where_the_greedy_token_is_none(piece_vlm):
    """Rule "options": the arg-max over the question's options' target tokens, even when the greedy
    token answers nothing (here "▁ok"), so it can be right where rule "first_token" is wrong."""
    ids = piece_vlm.tokenizer.convert_tokens_to_ids
    prepared = SimpleNamespace(prompt="ok:")
    logits = torch.zeros(len(piece_vlm.tokenizer))
    logits[ids("▁ok")], logits[ids("▁")], logits[ids("2")], logits[ids("▁yel")] = 5.0, 4.0, 3.0, 2.0
    choice = choose_option(piece_vlm, prepared, ["yes", "2", "yellow"], logits=logits)
    assert choice.choice == "2" and choice.index == 1 and choice.scores == (0.0, 3.0, 2.0)
    assert choice.method == "first_token"
    gold = answer_tokens(piece_vlm, "ok:", "2")
    assert not is_correct(piece_vlm, gold, predicted=int(logits.argmax())), "the greedy token is not an answer"
    assert is_correct_option(gold, choice) and is_correct_option("2", choice)
    assert not is_correct_option("yes", choice)
    tie = choose_option(piece_vlm, prepared, ["yes", "above"], logits=torch.zeros(len(piece_vlm.tokenizer)))
    assert tie.choice == "yes", "ties go to the first option"
    with pytest.raises(InputError, match="share a target token"):
        choose_option(piece_vlm, prepared, ["yellow", "yel"], logits=logits)  # both start with "▁yel"
    with pytest.raises(InputError, match="at least 2"):
        choose_option(piece_vlm, prepared, ["yes"], logits=logits)
    with pytest.raises(InputError, match="unknown option scoring method"):
        choose_option(piece_vlm, prepared, ["yes", "2"], method="best")


def test_options_rule_batched_and_by_log_probability_on_a_zoo_checkpoint():
    """On the zoo's first trajectory checkpoint (stage 1, step 0: it describes the scene and never
    answers, so the first-token rule is never right) the options rule is right on some questions;
    the batched choice equals one prompt at a time, and with one-token answers scoring whole
    log-probabilities picks the same options."""
    from analysis import load_vlm
    from analysis.data.shapes import make_samples

    vlm = load_vlm("zoo:shapes-llava-step0", device="cpu")
    samples = make_samples(21, seed=31)
    prepared = [vlm.prepare(s.image, s.question) for s in samples]
    batched = choose_options(vlm, prepared, [s.options for s in samples], batch_size=4)
    alone = [choose_option(vlm, p, s.options) for p, s in zip(prepared, samples)]
    assert [c.choice for c in batched] == [c.choice for c in alone]
    for b, a in zip(batched, alone):
        assert b.scores == pytest.approx(a.scores, abs=1e-4)
    by_logprob = choose_options(vlm, prepared, [s.options for s in samples], method="logprob")
    assert [c.choice for c in by_logprob] == [c.choice for c in alone]
    first = [is_correct(vlm, answer_tokens(vlm, p.prompt, s.answer), predicted=int(next_token_logits(vlm, p).argmax()))
             for p, s in zip(prepared, samples)]
    options = [is_correct_option(s.answer, c) for s, c in zip(samples, alone)]
    assert not any(first) and 0 < sum(options) < len(samples), options


def test_score_equals_a_plain_teacher_forced_forward(family, tiny, photo):
    vlm = tiny(family)
    prepared = vlm.prepare(photo, QUESTION)
    text = "red circle"
    result = score(vlm, prepared, text)
    ids = list(result.answer.ids)
    assert len(ids) >= 2
    inputs = vlm.adapter.append(prepared.inputs, ids)
    with torch.no_grad():
        logits = vlm.model(**inputs).logits[0].float()
    logprobs = torch.log_softmax(logits[prepared.length - 1 : prepared.length - 1 + len(ids)], -1)
    reference = float(sum(logprobs[k, t] for k, t in enumerate(ids)))
    assert result.logprob == pytest.approx(reference, abs=1e-4)
    p_first = float(torch.softmax(next_token_logits(vlm, prepared), -1)[result.answer.target])
    assert result.p_target == pytest.approx(p_first, abs=1e-6)
    # the whole-sequence score is not the first token's: the reference would see a one-token slip
    assert abs(result.logprob - torch.log(torch.tensor(p_first)).item()) > 1e-2


def test_batched_generation_equals_one_sample_at_a_time(tiny, photo):
    vlm = tiny("qwen2_vl")
    small = photo.resize((120, 90))
    prepared = [vlm.prepare(photo, QUESTION), vlm.prepare(small, "is there a red square ?")]
    batched = generate(vlm, prepared, max_new_tokens=4)
    alone = [generate(vlm, [p], max_new_tokens=4)[0] for p in prepared]
    assert batched == alone and all(len(t) > 0 for t in batched)


def test_zoo_accuracy_knockout_and_capture_agree_on_held_out_questions(monkeypatch):
    """The zoo's accuracy, the knockout sweep's kept samples and capture's correctness are one rule
    ("first_token") computed three ways: on 350 held-out questions they name the same samples."""
    import sys

    from analysis import load_vlm
    from analysis.capture import capture
    from analysis.data.shapes import make_samples
    from analysis.probes import information_flow
    from analysis.zoo import EVAL_SEED, evaluate
    from analysis.zoo.evaluate import predict, scene_size

    vlm = load_vlm("zoo:shapes-llava", device="cpu")
    samples = make_samples(350, EVAL_SEED, image_size=scene_size(vlm.processor))
    zoo = predict(vlm, samples, progress=False)
    # evaluate's default questions are these 350, and its table is their predictions' (not computed twice)
    asked = []
    monkeypatch.setattr(sys.modules["analysis.zoo.evaluate"], "predict", lambda _, given, *args: asked.append(given) or zoo)
    table = evaluate(vlm, n=350, progress=False).set_index("question_type")
    assert asked == [samples]
    assert table.loc["overall", "accuracy"] == pytest.approx(zoo["correct"].mean())
    flow = information_flow(vlm, samples, blocks=("last->last",), window=vlm.n_layers, progress=False)
    acts = capture(vlm, samples, layers=[-1], roles=["last"], batch_size=32, progress=False)
    correct = set(zoo.index[zoo["correct"]])
    assert set(flow.frame["sample"]) == correct
    assert set(acts.meta["sample"][acts.meta["correct"].astype(bool)]) == correct
    assert flow.n_correct == len(correct) == int(acts.meta["correct"].sum())
    assert 0.9 < len(correct) / 350 < 1.0  # a real mix of right and wrong answers
