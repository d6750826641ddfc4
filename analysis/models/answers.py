"""Answers: their tokens after a prompt, their scores, greedy generation and one correctness rule.

Every probe and notebook that needs an answer's token, its probability or whether the model got
it right calls this module, so accuracies mean the same thing everywhere.

* ``answer_tokens(vlm, prompt, text)`` -> ``Answer``: the ids ``text`` adds when it follows the
  prompt as the answer (tokenizers that merge across the boundary handled), and its **target
  token**: the first of those ids that carries part of the answer. A SentencePiece tokenizer
  may split " 2" into "▁" + "2" and a byte-level BPE may emit a bare "Ġ": such space-only pieces
  are never the target, or every digit answer would share one token.
* ``is_correct(vlm, answer, predicted=... | generated=...)``: the one correctness rule, with two
  named forms (``RULES``):

  - ``"first_token"`` (a next-token distribution, e.g. knockout, capture, the zoo's accuracy):
    the greedy next token is the answer's target token, or its text ``p`` (decoded, stripped,
    lower case) starts the answer at least as far as the target does: ``p`` is a prefix of the
    answer and the target's text is a prefix of ``p``. So "Yes" counts for "yes", "▁yellow" for
    a target "▁yel", but neither "a" for "above" nor a bare "▁" for "2";
  - ``"first_word"`` (generated text, e.g. steering): the first word of the generation (lower
    case, punctuation stripped) is the answer (lower case, stripped).

  For a one-token answer the two agree whenever the generation stops after that token.
* ``choose_option(vlm, prepared, options)`` -> ``OptionChoice`` and ``is_correct_option``: the
  options-restricted form ``"options"`` for questions with a known answer set (the shapes world's
  ``Sample.options``): the prediction is the arg-max over the question's candidate answers only,
  of their target tokens' next-token logits (``method="first_token"``, one forward) or of their
  whole teacher-forced log-probabilities (``method="logprob"``, one forward per option). A model
  that never answers with one of the options (e.g. one that describes the image instead) is then
  at chance, ``1 / len(options)``, rather than at 0; ``choose_options`` does a batch.
* ``score(vlm, prepared, text)``: the target token's probability and the whole answer's
  log-probability (teacher-forced), fp32.
* ``next_token_logits`` and ``generate``: the greedy next token, and greedy generation of a
  batch of prepared inputs (left-padded through the adapter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from analysis.errors import InputError
from analysis.models.inputs import PreparedInputs
from analysis.models.numerics import finite

RULES: tuple[str, ...] = ("first_token", "first_word", "options")
OPTION_METHODS: tuple[str, ...] = ("first_token", "logprob")


@dataclass(frozen=True)
class Answer:
    """An answer's tokens after one prompt.

    Attributes:
        text: the answer as given.
        ids: the token ids the answer adds after the prompt, ``(n,)``, ``n >= 1``.
        target: the first id of ``ids`` that decodes to more than whitespace.
    """

    text: str
    ids: tuple[int, ...]
    target: int

    def __post_init__(self):
        if not self.ids or self.target not in self.ids:
            raise ValueError("an Answer has at least one id and its target is one of them")


def answer_tokens(vlm, prompt: str, text: str) -> Answer:
    """Return the ``Answer`` for ``text`` following ``prompt`` (separated by a space unless the prompt ends in one).

    The prompt alone and the prompt with the answer are tokenized; the ids after their common
    prefix are the answer's.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"an answer must be a non-empty string; got {text!r}")
    tok = vlm.tokenizer
    full_text = prompt + (text if prompt[-1:].isspace() else " " + text)
    base = tok(prompt, add_special_tokens=False)["input_ids"]
    full = tok(full_text, add_special_tokens=False)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(base, full)) if a != b), len(base))
    if start >= len(full):
        raise InputError(f"answer {text!r} adds no token after the prompt")
    ids = tuple(int(t) for t in full[start:])
    target = next((t for t in ids if tok.decode([t]).strip()), ids[0])
    return Answer(text=text, ids=ids, target=target)


def first_word(text: str) -> str:
    """Return the first whitespace-separated word of ``text``, lower case, without punctuation."""
    words = text.strip().lower().split()
    return words[0].strip(".,;:!?'\"") if words else ""


def is_correct(vlm, answer: Answer, *, predicted: int | None = None, generated: str | None = None) -> bool:
    """Return whether the model's output is ``answer``, by the rule its kind names (see the module docstring).

    Args:
        vlm: the model (its tokenizer decodes ``predicted``).
        answer: the gold answer's tokens after the prompt (``answer_tokens``).
        predicted: the greedy next token at the last prompt position (rule ``"first_token"``), or
        generated: the decoded generation (rule ``"first_word"``). Give exactly one.
    """
    if (predicted is None) == (generated is None):
        raise InputError("give exactly one of predicted= (a token id) and generated= (text)")
    gold = answer.text.strip().lower()
    if generated is not None:
        return first_word(generated) == gold
    if int(predicted) == answer.target:
        return True
    text = vlm.tokenizer.decode([int(predicted)]).strip().lower()
    target = vlm.tokenizer.decode([answer.target]).strip().lower()
    return bool(text) and gold.startswith(text) and text.startswith(target)


def next_token_logits(vlm, prepared: PreparedInputs) -> torch.Tensor:
    """Return the fp32 next-token logits at the last prompt position, shape ``(vocab,)``."""
    with torch.no_grad():
        return finite(vlm, vlm.model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float(), "next-token logits")


@dataclass(frozen=True)
class AnswerScore:
    """How likely the model finds an answer: ``p_target`` (the target token's probability at the
    last prompt position) and ``logprob`` (the sum of the answer's token log-probabilities,
    teacher-forced), both fp32; ``answer`` its tokens."""

    answer: Answer
    p_target: float
    logprob: float


def score(vlm, prepared: PreparedInputs, text: str) -> AnswerScore:
    """Return the ``AnswerScore`` of ``text`` as the answer to ``prepared`` (one forward)."""
    answer = answer_tokens(vlm, prepared.prompt, text)
    inputs = vlm.adapter.append(prepared.inputs, answer.ids)
    n = len(answer.ids)
    with torch.no_grad():
        logits = finite(vlm, vlm.model(**inputs, logits_to_keep=n + 1).logits[0, :n].float(), "answer logits")
    logprobs = torch.log_softmax(logits, dim=-1)
    ids = torch.tensor(answer.ids, device=logprobs.device)
    steps = logprobs[torch.arange(n, device=logprobs.device), ids]
    first = answer.ids.index(answer.target)
    return AnswerScore(answer=answer, p_target=float(logprobs[first, answer.target].exp()),
                       logprob=float(steps.sum()))


def stop_ids(vlm) -> set[int]:
    """Return the ids that end a generation: end-of-sequence ids and the image placeholder."""
    ids = {vlm.tokenizer.eos_token_id, vlm.adapter.image_token_id}
    configured = getattr(vlm.model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in ids if i is not None}


def generate(vlm, prepared: Sequence[PreparedInputs], max_new_tokens: int) -> list[list[int]]:
    """Greedy generation for a batch; return each sample's new tokens before the first stop token.

    Stop tokens are ``stop_ids(vlm)`` (the image placeholder cannot be fed back). Runs inside any
    active ``analysis.models.sites.editing`` block (e.g. steering).
    """
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1")
    batch, _ = vlm.adapter.pad([p.inputs for p in prepared])
    pad_id = vlm.tokenizer.pad_token_id
    with torch.no_grad():
        out = vlm.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad_id if pad_id is not None else 0)
    stop = stop_ids(vlm)
    result = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        cut = next((k for k, t in enumerate(row) if t in stop), len(row))
        result.append(row[:cut])
    return result


def decode(vlm, tokens: Sequence[int]) -> str:
    """Return generated ``tokens`` as text, special tokens removed, stripped."""
    return vlm.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()


@dataclass(frozen=True)
class OptionChoice:
    """Which of a question's candidate answers the model prefers (rule ``"options"``).

    Attributes:
        options: the candidate answers, as given.
        scores: one fp32 score per option, ``(len(options),)``: the next-token logit of the option's
            target token (``method="first_token"``) or the option's whole-answer log-probability
            (``"logprob"``).
        index: the arg-max of ``scores`` (the first option on a tie).
        method: ``"first_token"`` or ``"logprob"``.
    """

    options: tuple[str, ...]
    scores: tuple[float, ...]
    index: int
    method: str

    @property
    def choice(self) -> str:
        """The preferred option's text."""
        return self.options[self.index]


def check_options(options: Sequence[str], method: str = "first_token") -> tuple[str, ...]:
    """Return ``options`` as a tuple; raise ``InputError`` for an unknown ``method`` or fewer than 2 options."""
    if method not in OPTION_METHODS:
        raise InputError(f"unknown option scoring method {method!r}; use one of {OPTION_METHODS}")
    if isinstance(options, str) or len(options) < 2:
        raise InputError(f"choosing among options needs at least 2 candidate answers; got {options!r}")
    return tuple(options)


def choose_option(vlm, prepared: PreparedInputs, options: Sequence[str], method: str = "first_token",
                  logits: torch.Tensor | None = None) -> OptionChoice:
    """Return the ``OptionChoice`` of ``vlm`` among ``options`` as the answer to ``prepared``.

    Args:
        vlm: the model.
        prepared: one prompt (``vlm.prepare``).
        options: at least two candidate answers (e.g. a shapes-world sample's ``options``).
        method: ``"first_token"`` (default): compare the next-token logits of the options' target
            tokens (``answer_tokens``) at the last prompt position, one forward (none when ``logits``
            is given); options whose target tokens coincide cannot be told apart this way and raise
            ``InputError`` (use ``"logprob"``). ``"logprob"``: compare the options' whole teacher-
            forced log-probabilities (``score``), one forward per option.
        logits: for ``"first_token"``, the fp32 next-token logits ``(vocab,)`` at the last prompt
            position if already computed (default: computed here).
    """
    options = check_options(options, method)
    if method == "logprob":
        scores = [score(vlm, prepared, o).logprob for o in options]
    else:
        targets = [answer_tokens(vlm, prepared.prompt, o).target for o in options]
        if len(set(targets)) < len(targets):
            raise InputError(f"options {list(options)} share a target token under this tokenizer, so their "
                             f"first-token logits cannot tell them apart; use method='logprob'")
        if logits is None:
            logits = next_token_logits(vlm, prepared)
        scores = [float(logits[t]) for t in targets]
    index = max(range(len(options)), key=lambda k: (scores[k], -k))
    return OptionChoice(options=options, scores=tuple(float(v) for v in scores), index=index, method=method)


def choose_options(vlm, prepared: Sequence[PreparedInputs], options: Sequence[Sequence[str]],
                   method: str = "first_token", batch_size: int = 8) -> list[OptionChoice]:
    """Return ``choose_option`` for each prompt of ``prepared`` with its ``options``, in order.

    With ``method="first_token"`` the prompts are batched by token length (``batch_size`` at most
    per forward, so no padding enters the forward pass); ``"logprob"`` scores one option at a time.
    """
    if len(prepared) != len(options):
        raise InputError(f"got {len(prepared)} prompts but {len(options)} option lists")
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    if method == "logprob":
        return [choose_option(vlm, p, o, method) for p, o in zip(prepared, options)]
    if method not in OPTION_METHODS:
        raise InputError(f"unknown option scoring method {method!r}; use one of {OPTION_METHODS}")
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault(p.length, []).append(i)
    out: dict[int, OptionChoice] = {}
    for group in groups.values():
        for k in range(0, len(group), batch_size):
            chunk = group[k:k + batch_size]
            batch, _ = vlm.adapter.pad([prepared[i].inputs for i in chunk])
            with torch.no_grad():
                logits = finite(vlm, vlm.model(**batch, logits_to_keep=1).logits[:, -1].float(), "next-token logits")
            for row, i in enumerate(chunk):
                out[i] = choose_option(vlm, prepared[i], options[i], method, logits=logits[row])
    return [out[i] for i in range(len(prepared))]


def is_correct_option(answer: Answer | str, choice: OptionChoice) -> bool:
    """Return whether ``choice`` (rule ``"options"``) picked ``answer`` (compared lower case, stripped)."""
    gold = answer.text if isinstance(answer, Answer) else answer
    return choice.choice.strip().lower() == str(gold).strip().lower()
