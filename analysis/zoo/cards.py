"""Model cards: evaluate every checkpoint under a folder and write its README.md (+ an index)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

from analysis.data.shapes import chance_levels
from analysis.zoo.evaluate import EVAL_SEED, evaluate, evaluate_text
from analysis.zoo.registry import BUILD_COMMAND, list_checkpoints, trajectory

_ABOUT = {
    "lm": "Text-only Llama decoder pre-trained on question parsing (`USER: what color is the circle ? ASSISTANT: "
          "circle color`) and scene descriptions. Accuracy below: the best of each question's options given the "
          "question alone (no image): chance, as the answers are balanced.",
    "vision": "CLIP vision tower pre-trained with per-patch supervision: colour, shape and size of the object "
              "under each patch, whether the patch holds that object's centre, how many objects share its colour, "
              "and the patch's own position.",
    "vlm": "`LlavaForConditionalGeneration`: CLIP vision tower, 2-layer MLP projector, Llama decoder.",
}


def write_cards(out: Path, eval_n: int = 1400, train_seconds: dict | None = None) -> dict:
    """Evaluate each checkpoint in ``out``, write ``<name>/README.md``, ``README.md`` and ``zoo.json``.

    Each vision-language checkpoint is scored on ``eval_n`` held-out questions (seed ``EVAL_SEED``)
    by the two rules of ``analysis.zoo.evaluate.evaluate``: the greedy first token (``accuracy``)
    and the arg-max over the question's options (``accuracy_options``, at chance for a model that
    does not answer), beside ``chance`` per question type.

    Returns {"summary": {name: overall accuracy}, "summary_options": {name: overall options
    accuracy}, "tables": {name: records per question type}, "chance": chance_levels(), ...}
    (also written to ``zoo.json`` with ``seed``, ``n`` and ``train_seconds``).
    """
    out = Path(out)
    tables, summary, options = {}, {}, {}
    for name in list_checkpoints(out):
        zoo = AutoConfig.from_pretrained(out / name).to_dict().get("zoo", {})
        kind = zoo.get("kind", "vlm")
        if kind == "vlm":
            table = evaluate(out / name, n=eval_n, progress=False)
        elif kind == "lm":
            lm = LlamaForCausalLM.from_pretrained(out / name, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(out / name)
            table = evaluate_text(lm, tok, eval_n, with_caption=False)
        else:
            table = None
        if table is not None:
            tables[name] = table.round(4).to_dict("records")
            summary[name] = float(table.accuracy.iloc[-1])
            if "accuracy_options" in table:
                options[name] = float(table.accuracy_options.iloc[-1])
        (out / name / "README.md").write_text(_card(name, zoo, table, eval_n))
    index = {"seed": EVAL_SEED, "n": eval_n, "summary": summary, "summary_options": options,
             "chance": chance_levels(), "tables": tables, "train_seconds": train_seconds}
    (out / "zoo.json").write_text(json.dumps(index, indent=1) + "\n")
    (out / "README.md").write_text(_index(summary, tables, train_seconds, _order(out, tables)))
    return index


def _order(out: Path, tables: dict) -> list[str]:
    """Return the evaluated vision-language checkpoints: the training trajectory in order, then the others by name."""
    path = [n.removeprefix("zoo:") for run in ("shapes-llava", "shapes-llava-run2") for n in trajectory(out, run)]
    vlms = [n for n in tables if n != "shapes-lm"]
    return [n for n in path if n in tables] + sorted(n for n in vlms if n not in path)


def _card(name: str, zoo: dict, table: pd.DataFrame | None, eval_n: int) -> str:
    spec, recipe = zoo.get("spec", {}), zoo.get("recipe", {})
    steps = ", ".join(f"{k} {v}" for k, v in zoo.get("steps", {}).items())
    lines = [
        f"# {name}", "", _ABOUT[zoo.get("kind", "vlm")], "",
        f"- Stage: {zoo.get('stage', '?')}" + (" — vision self-attention weights are zero: no patch mixing."
                                              if zoo.get("local") else ""),
        f"- Data: the shapes world (`analysis.data.shapes`), {spec.get('image_size')} px scenes, "
        f"patch {spec.get('patch_size')}; streams of seed {recipe.get('seed', 0)} * 10 + stage (< 1000).",
        f"- Steps: {steps}; batch size {recipe.get('batch_size')}; seed {zoo.get('seed')}.",
        f"- Sizes: vision {spec.get('vision_layers')} x {spec.get('vision_hidden')}, "
        f"decoder {spec.get('text_layers')} x {spec.get('text_hidden')}; weights stored in fp16.",
        f"- Rebuild: `{zoo.get('rebuild', BUILD_COMMAND)}`.",
    ]
    if zoo.get("run"):
        lines.insert(5, f"- Run: {zoo['run']}.")
    if zoo.get("answer_map"):
        lines.append(f"- Answers renamed: {', '.join(f'{k} -> {v}' for k, v in zoo['answer_map'].items())}.")
    if table is not None:
        what = ("greedy first answer token; restricted to the question's options: the option whose first token "
                "scores highest" if "accuracy_options" in table else "best of the question's options")
        lines += ["", f"Accuracy ({what}) on {eval_n} held-out questions (seed {EVAL_SEED}):",
                  "", _markdown(table.rename(columns=_HEADERS))]
    return "\n".join(lines) + "\n"


_HEADERS = {"accuracy": "accuracy (first token)", "accuracy_options": "accuracy (options)"}


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    rows = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r] for r in table.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |"
                                                                                 for r in rows])


def _index(summary: dict, tables: dict, train_seconds: dict | None, vlms: list[str] | None = None) -> str:
    vlms = vlms if vlms is not None else [name for name in tables if name != "shapes-lm"]
    types = [r["question_type"] for r in tables[vlms[0]]] if vlms else []
    header = ["| checkpoint | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]
    lines = ["# The toy model zoo", "",
             f"Built by `{BUILD_COMMAND}`; load with `load_vlm(\"zoo:<name>\")`. Each folder has a model card.",
             f"Accuracy on {len(types) and tables[vlms[0]][-1]['n']} held-out questions (seed {EVAL_SEED}), the "
             "training trajectories first (stage 1 -> stage 2; `shapes-llava-run2-*`: a second run of the recipe), by two rules: the greedy first answer token, "
             "and in brackets restricted to the question's options (the option whose first token scores "
             "highest: a model that does not answer is at chance, not at 0):", ""] + header
    lines += [f"| {name} | " + " | ".join(_cell(r) for r in tables[name]) + " |" for name in vlms]
    if vlms and "chance" in tables[vlms[0]][0]:
        lines += ["| chance | " + " | ".join(f"{r['chance']:.3f}" for r in tables[vlms[0]]) + " |"]
    if "shapes-lm" in tables:
        lines += ["", f"shapes-lm (text only, best of the options, no image): {summary['shapes-lm']:.3f} overall."]
    if train_seconds:
        lines += ["", "Training time (minutes since start, after each checkpoint): " + ", ".join(
            f"{k} {v / 60:.1f}" for k, v in train_seconds.items()) + "."]
    return "\n".join(lines) + "\n"


def _cell(record: dict) -> str:
    """Return "first-token accuracy (options accuracy)" of one question type's record."""
    if "accuracy_options" not in record:
        return f"{record['accuracy']:.3f}"
    return f"{record['accuracy']:.3f} ({record['accuracy_options']:.3f})"
