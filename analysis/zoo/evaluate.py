"""Accuracy of a zoo model (or any LLaVA-style model with a processor) on fresh shapes questions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.data.shapes import DEFAULT_IMAGE_SIZE, QUESTION_TYPES, Sample, make_samples
from analysis.models import VLM, load_vlm
from analysis.models.answers import answer_tokens, choose_option, is_correct, is_correct_option
from analysis.models.inputs import length_batches
from analysis.zoo.registry import checkpoint_path

EVAL_SEED = 10_000  # training streams use seeds below 1000 (see analysis.zoo.train)


def _as_vlm(vlm: Any) -> VLM:
    """Return a ``VLM`` for a VLM, a (model, processor) pair, a checkpoint folder or a zoo name."""
    if isinstance(vlm, VLM):
        return vlm
    if isinstance(vlm, (tuple, list)):
        model, processor = vlm
        return VLM.from_parts(model, processor, name=str(getattr(model, "name_or_path", "") or "model"))
    path = Path(vlm) if Path(vlm).is_dir() else checkpoint_path(str(vlm))
    return load_vlm(str(path), device="cpu", dtype="float32")


def answer_map(model) -> dict[str, str]:
    """Return the renaming of gold answers a checkpoint was trained with ({} for the standard task)."""
    return dict((getattr(model.config, "zoo", None) or {}).get("answer_map") or {})


@torch.no_grad()
def predict(vlm: Any, samples: Sequence[Sample], batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Return one row per sample: question_type, question, answer, prediction, p_answer, correct,
    option, correct_options, chance.

    Inputs are built by ``VLM.prepare`` (the family's chat template), as every probe builds them.
    ``prediction`` is the greedy next token at the last prompt position, decoded; ``answer`` the
    gold answer after the checkpoint's answer map; ``p_answer`` the softmax probability (fp32) of
    its target token; ``correct`` rule ``"first_token"`` of ``analysis.models.answers``. ``option``
    is the question's option (after the answer map) whose target token has the highest logit and
    ``correct_options`` whether it is the answer (rule ``"options"``, ``method="first_token"``), so
    a model that never answers with an option sits at ``chance`` (``1 / len(options)``), not at 0.
    Prompts are batched by token length, so no padding enters the forward pass.
    """
    vlm = _as_vlm(vlm)
    renames = answer_map(vlm.model)
    prepared = [vlm.prepare(s.image, s.question) for s in samples]
    rows = {}
    for group in tqdm(length_batches([p.length for p in prepared], batch_size), desc="evaluate", disable=not progress,
                      leave=False):
        batch, _ = vlm.adapter.pad([prepared[i].inputs for i in group])
        logits = vlm.model(**batch, logits_to_keep=1).logits[:, -1].float()
        probs = logits.softmax(-1)
        for row, i in enumerate(group):
            s = samples[i]
            gold = answer_tokens(vlm, prepared[i].prompt, renames.get(s.answer, s.answer))
            predicted = int(probs[row].argmax())
            choice = choose_option(vlm, prepared[i], [renames.get(o, o) for o in s.options], logits=logits[row])
            rows[i] = dict(question_type=s.question_type, question=s.question, answer=gold.text,
                           prediction=vlm.tokenizer.decode([predicted]).strip(),
                           p_answer=float(probs[row, gold.target]),
                           correct=is_correct(vlm, gold, predicted=predicted), option=choice.choice,
                           correct_options=is_correct_option(gold, choice), chance=1 / len(s.options))
    return pd.DataFrame([rows[i] for i in range(len(samples))])


def _table(df: pd.DataFrame) -> pd.DataFrame:
    """Return accuracy and chance per question type (in QUESTION_TYPES order) plus an "overall" row.

    Columns question_type, n, accuracy (mean of ``correct``), accuracy_options (mean of
    ``correct_options``, only when ``df`` has that column), chance (mean of ``chance``).
    """
    types = [t for t in QUESTION_TYPES if t in set(df.question_type)]
    columns = dict(n=("correct", "size"), accuracy=("correct", "mean"))
    if "correct_options" in df:
        columns["accuracy_options"] = ("correct_options", "mean")
    columns["chance"] = ("chance", "mean")
    table = df.groupby("question_type").agg(**columns).reindex(types).reset_index()
    overall = pd.DataFrame([dict(question_type="overall", n=len(df),
                                 **{name: df[column].astype(float).mean() for name, (column, how) in columns.items()
                                    if how == "mean"})])
    return pd.concat([table, overall], ignore_index=True)


@torch.no_grad()
def evaluate_text(model, tokenizer, n: int = 700, seed: int = EVAL_SEED, with_caption: bool = True,
                  batch_size: int = 64) -> pd.DataFrame:
    """Return accuracy per question type of a text-only LM, as :func:`evaluate` does.

    The prompt is "USER: <caption> <question> ASSISTANT:" and the prediction is the most likely
    of the question's ``options``. Without the caption no question is answerable, so a text-only
    model sits at chance.
    """
    model.eval()
    samples = make_samples(n, seed)
    prompts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{s.scene.describe()} {s.question}" if with_caption else s.question}],
        add_generation_prompt=True, tokenize=False) for s in samples]
    rows = []
    for group in length_batches([len(tokenizer(p).input_ids) for p in prompts], batch_size):
        inputs = tokenizer([prompts[i] for i in group], return_tensors="pt").to(model.device)
        logits = model(**inputs).logits[:, -1].float()
        for row, i in enumerate(group):
            s = samples[i]
            option_ids = tokenizer(list(s.options), add_special_tokens=False).input_ids
            best = max(range(len(s.options)), key=lambda k: logits[row, option_ids[k][0]].item())
            rows.append(dict(question_type=s.question_type, correct=s.options[best] == s.answer,
                             chance=1 / len(s.options)))
    return _table(pd.DataFrame(rows))


def scene_size(processor) -> int:
    """Return the side (px) to render scenes at for ``processor``: its crop size (a zoo model's
    training size), else the shapes world's default."""
    crop = getattr(processor.image_processor, "crop_size", None)
    return int(crop["height"]) if crop else DEFAULT_IMAGE_SIZE


def evaluate(vlm: Any, n: int = 700, seed: int = EVAL_SEED, question_types: Sequence[str] | None = None,
             image_size: int | None = None, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """Return accuracy per question type on ``n`` fresh scenes, plus an "overall" row.

    Columns: question_type, n, accuracy (rule ``"first_token"`` of ``analysis.models.answers``),
    accuracy_options (rule ``"options"``: the arg-max over the question's options, see
    :func:`predict`), chance (mean of 1 / number of options; ``analysis.data.shapes.chance_levels``
    gives its expectation). ``vlm`` is a loaded ``VLM``, a (model, processor)
    pair, a checkpoint folder or a zoo name. ``image_size`` renders scenes at another size (the processor resizes them); default
    ``scene_size(processor)``.
    """
    vlm = _as_vlm(vlm)
    samples = make_samples(n, seed, question_types, image_size=image_size or scene_size(vlm.processor))
    return _table(predict(vlm, samples, batch_size, progress))
