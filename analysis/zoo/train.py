"""Train the toy model zoo from scratch on the shapes world, following the LLaVA recipe.

    python -m analysis.zoo.train --all            # every checkpoint into models/
    python -m analysis.zoo.train --all --scale 0.05 --out /tmp/zoo   # a quick smoke run
    python -m analysis.zoo.train --snapshots      # add missing shapes-llava-step<N> snapshots to models/
    python -m analysis.zoo.train --second-run     # a second run of stages 1-4, kept as shapes-llava-run2-*
    python -m analysis.zoo.train --cards          # re-evaluate every checkpoint, rewrite the model cards

Stages (plain PyTorch loops: AdamW, warm-up + cosine schedule, tqdm progress bars):
  1. ``shapes-lm``: Llama decoder pre-trained on text: questions -> their key words ("what color
     is the circle ?" -> "circle color") and scene descriptions. (Text-form QA with the caption in
     place of the image was tried and left out: a 4-layer LM does not learn it in this budget, and
     the answer priors it learns instead slowed visual instruction tuning down.)
  2. ``shapes-vision``: CLIP vision tower pre-trained with per-patch supervision: colour, shape
     and size of the object under each patch, whether the patch holds that object's centre, how
     many objects share that object's colour, and the patch's own position.
  3. ``shapes-llava-frozen``: LLaVA stage 1, only the projector trained, on captioning.
  4. ``shapes-llava``: stage 2, visual instruction tuning of projector and decoder (the vision
     tower stays frozen, as in LLaVA-1.5). ``shapes-llava-step<N>`` are snapshots at global step
     N of stages 1 + 2.
  5. ``shapes-llava-ft``: ``shapes-llava`` fine-tuned on a shifted answer vocabulary (:data:`SHIFTED_ANSWERS`).
  6. ``shapes-llava-local``: a vision tower whose self-attention weights are zero (and frozen), so
     each image token depends on its own patch only, pre-trained like ``shapes-vision``; then
     stages 1 and 2 (``Recipe.local_steps``) with ``shapes-llava``'s decoder as the starting point.

Instruction data are multi-turn conversations about one scene (LLaVA style): a balanced question
first, follow-up questions of every type after it, then the caption. Stage k reads the data stream of
seed ``recipe.seed * 10 + STREAMS[k]``; held-out evaluation uses seeds >= 1000. On one machine
(same torch, thread count and CPU) a run repeats bit for bit; on another it need not: the same
initial weights and the same first-step gradients (checked under transformers 5.23 and 5.24, with 1
and 2 threads) drift apart through float rounding over hundreds of steps (the zoo committed before
2026-12 was built elsewhere; retrained on a 2-core AMD EPYC with torch 2.14.1 its ``shapes-lm``
differed, cosine 0.86-0.98 per weight matrix). The committed zoo is this command's output on that
machine with one thread (the default: a second thread buys little at these sizes and makes a run
on a shared machine many times slower). ``--snapshots`` therefore trusts nothing: it retrains stages 1-4 into a scratch
folder, checks every retrained checkpoint that ``models/`` already holds tensor for tensor, stops at
the first difference, and only when all match copies the snapshots ``models/`` lacks (see
:func:`train_snapshots`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import CLIPVisionModel, LlamaForCausalLM, LlavaForConditionalGeneration
from transformers.utils import logging as hf_logging

from analysis.data.shapes import COLORS, QUESTION_TYPES, SHAPES, SIZES, Sample, ask, make_samples
from analysis.zoo.build import DESCRIBE_PROMPT, Encoder, ModelSpec, build_config, build_model, build_processor
from analysis.zoo.evaluate import evaluate
from analysis.zoo.registry import MODELS_DIR, list_checkpoints

SHIFTED_ANSWERS = {"yes": "true", "no": "false", "one": "1", "two": "2", "three": "3"}
STREAMS = {"lm": 0, "vision": 1, "stage1": 2, "stage2": 3, "ft": 4, "local-vision": 5, "local-stage1": 6,
           "local-stage2": 7}  # stage -> data stream seed offset
FOLLOW_UPS = QUESTION_TYPES + ("ChooseRel", "CompareAttr", "LogicalObj", "Count")  # the slow learners twice
N_HEADS = {"color": len(COLORS) + 1, "shape": len(SHAPES) + 1, "size": len(SIZES) + 1, "centre": 2,
           "same_color": 5}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the zoo: sizes, seed, steps and learning rates per stage."""

    seed: int = 0
    spec: ModelSpec = ModelSpec()
    batch_size: int = 32
    lm_steps: int = 300
    vision_steps: int = 1500
    stage1_steps: int = 200
    stage2_steps: int = 2000
    ft_steps: int = 200
    local_steps: int = 400
    lm_lr: float = 3e-3
    vision_lr: float = 3e-3
    stage1_lr: float = 3e-3
    stage2_lr: float = 2e-3
    ft_lr: float = 5e-4
    # global steps over stages 1 + 2 (stage 1 ends at ``stage1_steps``, where ``shapes-llava-frozen`` is saved).
    # The committed zoo was built with the first 7 (0, 100, 300, 600, 900, 1300, 1700; its configs record
    # its recipe); ``--snapshots`` adds the others where retraining reproduces it (see train_snapshots).
    snapshots: tuple[int, ...] = (0, 50, 100, 150, 250, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200,
                                  1300, 1500, 1700, 1900, 2100)

    def scaled(self, factor: float) -> "Recipe":
        """Return the recipe with every step count (and snapshot) multiplied by ``factor``."""
        steps = {k: max(1, round(v * factor)) for k, v in asdict(self).items() if k.endswith("_steps")}
        return replace(self, **steps, snapshots=tuple(sorted({round(s * factor) for s in self.snapshots})))


# ---------------------------------------------------------------- batches


def conversation(sample: Sample, rng: np.random.Generator, answer_map: dict | None = None,
                 caption: bool = True) -> list[tuple[str, str]]:
    """Return (question, answer) turns about one scene: the sample's balanced question, then one
    question of each of :data:`FOLLOW_UPS` in random order (see :func:`analysis.data.shapes.ask`),
    then the caption."""
    questions = [sample] + [ask(sample.scene, rng, str(t)) for t in rng.permutation(FOLLOW_UPS)]
    renames = answer_map or {}
    turns = [(q.question, renames.get(q.answer, q.answer)) for q in questions if q is not None]
    return turns + [(DESCRIBE_PROMPT, sample.scene.describe())] * caption


def keywords(question: str) -> str:
    """Return the question's content words, object words first: "what color is the circle ?" -> "circle color"."""
    words = question.split()
    return " ".join([w for w in words if w in SHAPES] + [w for w in words if w not in SHAPES and w not in _STOP])


_STOP = {"what", "is", "the", "are", "there", "a", "how", "many", "shapes", "of", "?"}


def qa_batch(enc: Encoder, recipe: Recipe, stream: str, step: int, answer_map: dict | None = None) -> dict:
    """Return batch ``step`` of stream ``stream``: multi-turn conversations about rendered scenes."""
    samples = _stream(recipe, stream, step)
    rows = [enc.dialog(conversation(s, _rng(recipe, stream, step, i), answer_map)) for i, s in enumerate(samples)]
    return enc.batch(rows, [s.image for s in samples])


def caption_batch(enc: Encoder, recipe: Recipe, stream: str, step: int) -> dict:
    """Return batch ``step`` of stream ``stream`` as captioning: "describe the image ." -> caption."""
    samples = _stream(recipe, stream, step)
    rows = [enc.dialog([(DESCRIBE_PROMPT, s.scene.describe())]) for s in samples]
    return enc.batch(rows, [s.image for s in samples])


def text_batch(enc: Encoder, recipe: Recipe, step: int) -> dict:
    """Return batch ``step`` of text pre-training: three rows in four parse questions into their key
    words ("what color is the circle ?" -> "circle color"), the fourth writes a scene description."""
    rows = []
    for i, s in enumerate(_stream(recipe, "lm", step)):
        turns = conversation(s, _rng(recipe, "lm", step, i), caption=False)
        if i % 4:
            rows.append(enc.dialog([(q, keywords(q)) for q, _ in turns], image=False))
        else:
            rows.append(enc.dialog([(DESCRIBE_PROMPT, s.scene.describe())], image=False))
    return enc.batch(rows)


def vision_batch(enc: Encoder, recipe: Recipe, stream: str, step: int) -> dict:
    """Return ``pixel_values`` (B, 3, S, S) and per-patch ``labels`` (B, P, len(N_HEADS))."""
    samples = _stream(recipe, stream, step)
    labels = torch.stack([patch_labels(s, recipe.spec) for s in samples])
    return {"pixel_values": enc.pixels([s.image for s in samples]), "labels": labels}


def patch_labels(sample: Sample, spec: ModelSpec) -> torch.Tensor:
    """Return (P, 5) labels per patch, row-major: colour, shape, size of the object under the patch
    (0 = background), whether the patch holds that object's centre, and how many objects of the scene
    share that object's colour (0 = background; needs patches to see each other, so a patch-local
    tower cannot learn it).

    A patch belongs to the object covering most of it, if that object covers >= 1/8 of the patch.
    """
    g, p = spec.image_size // spec.patch_size, spec.patch_size
    masks = sample.scene.masks(spec.image_size)
    cover = masks.reshape(len(masks), g, p, g, p).sum((2, 4)).reshape(len(masks), -1)  # (n, P)
    best, owned = cover.argmax(0), cover.max(0) * 8 >= p * p
    objs = sample.scene.objects
    table = np.array([[list(COLORS).index(o.color) + 1, SHAPES.index(o.shape) + 1, list(SIZES).index(o.size) + 1]
                      for o in objs])
    labels = np.zeros((g * g, len(N_HEADS)), dtype=np.int64)
    same = np.array([sum(q.color == o.color for q in objs) for o in objs])
    labels[:, :3] = np.where(owned[:, None], table[best], 0)
    labels[:, 4] = np.where(owned, same[best], 0)
    for o in objs:
        labels[min(int(o.y * g), g - 1) * g + min(int(o.x * g), g - 1), 3] = 1
    return torch.from_numpy(labels)


def _stream(recipe: Recipe, stream: str, step: int) -> list[Sample]:
    n = recipe.batch_size
    return make_samples(n, seed=recipe.seed * 10 + STREAMS[stream], image_size=recipe.spec.image_size,
                        start=step * n)


def _rng(recipe: Recipe, stream: str, step: int, i: int) -> np.random.Generator:
    return np.random.default_rng([recipe.seed * 10 + STREAMS[stream], step, i])


# ---------------------------------------------------------------- models


class VisionPretrainer(torch.nn.Module):
    """CLIP vision tower + linear heads on its patch tokens (CLS dropped, as LLaVA does).

    Heads classify the object under each patch (:data:`N_HEADS`) and regress the patch's own
    (x, y) centre, which keeps positions linearly readable for left/right/above/below questions.
    """

    def __init__(self, tower: CLIPVisionModel):
        super().__init__()
        self.tower = tower
        self.head = torch.nn.Linear(tower.config.hidden_size, sum(N_HEADS.values()) + 2)
        g = tower.config.image_size // tower.config.patch_size
        centres = (torch.arange(g, dtype=torch.float32) + 0.5) / g
        self.register_buffer("xy", torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1).reshape(-1, 2))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the summed per-patch losses (scalar); ``labels`` is (B, P, len(N_HEADS))."""
        out = self.head(self.tower(pixel_values).last_hidden_state[:, 1:])  # (B, P, heads + 2)
        logits, xy = out[..., :-2], out[..., -2:]
        loss = F.mse_loss(xy, self.xy.expand_as(xy)) * 10
        return loss + sum(F.cross_entropy(part.flatten(0, 1), labels[..., k].flatten())
                          for k, part in enumerate(logits.split(list(N_HEADS.values()), -1)))


def make_local(tower: CLIPVisionModel) -> CLIPVisionModel:
    """Zero and freeze every self-attention weight: each token then depends on its own patch only."""
    for name, module in tower.named_modules():
        if name.endswith("self_attn"):
            for p in module.parameters():
                p.data.zero_()
                p.requires_grad_(False)
    return tower


def assemble(recipe: Recipe, decoder: tuple[torch.nn.Module, torch.nn.Module],
             tower: CLIPVisionModel) -> LlavaForConditionalGeneration:
    """Return a LLaVA model with the given (language model, lm_head) and vision tower and a fresh projector."""
    model = build_model(recipe.spec, seed=recipe.seed)
    model.model.language_model.load_state_dict(decoder[0].state_dict())
    model.lm_head.load_state_dict(decoder[1].state_dict())
    model.model.vision_tower.load_state_dict(tower.state_dict())
    for p, q in zip(model.model.vision_tower.parameters(), tower.parameters()):
        p.requires_grad_(q.requires_grad)
    return model


# ---------------------------------------------------------------- loop


def fit(loss_fn: Callable[[int], torch.Tensor], params: list[torch.nn.Parameter], steps: int, lr: float,
        desc: str, on_step: Callable[[int], None] | None = None) -> list[float]:
    """Run ``steps`` AdamW steps on ``loss_fn(step)``; return the losses.

    Linear warm-up over 5% of the steps, then cosine decay to 10% of ``lr``; gradients clipped at 1.
    ``on_step(k)`` is called after ``k`` steps (and with 0 before the first).
    """
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min((t + 1) / warm, 0.55 + 0.45 * math.cos(
        math.pi * min(1.0, max(0, t - warm) / max(1, steps - warm)))))
    losses = []
    if on_step:
        on_step(0)
    bar = tqdm(range(steps), desc=desc, leave=True)
    for t in bar:
        loss = loss_fn(t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if on_step:
            on_step(t + 1)
    return losses


# ---------------------------------------------------------------- saving


def save(model, folder: Path, zoo: dict, processor=None, tokenizer=None) -> None:
    """Save ``model`` in fp16 (+ processor or tokenizer) to ``folder`` with ``zoo`` metadata in its config."""
    if folder.exists():
        shutil.rmtree(folder)
    hf_logging.disable_progress_bar()
    model = copy.deepcopy(model).half()
    model.config.zoo = zoo
    model.save_pretrained(folder)
    for extra in (processor, tokenizer):
        if extra is not None:
            extra.save_pretrained(folder)


def llava_stages(recipe: Recipe, enc: Encoder, processor, out: Path, base: dict,
                 decoder: tuple[torch.nn.Module, torch.nn.Module], local: bool, stage2_steps: int,
                 monitor: int = 0, on_save: Callable[[str], None] | None = None) -> LlavaForConditionalGeneration:
    """Pre-train a vision tower, then run LLaVA stages 1 and 2 on ``decoder``; save and return the model.

    ``decoder`` is a (language model, lm_head) pair: the text LM's or a trained VLM's. ``monitor`` > 0
    prints held-out accuracy every ``monitor`` stage-2 steps. The main run (``local=False``) also saves ``shapes-vision``, ``shapes-llava-frozen``
    and the ``shapes-llava-step<N>`` snapshots; the local run saves ``shapes-vision-local`` and
    ``shapes-llava-local``. ``on_save(name)`` is called after each checkpoint ``out / name`` is written
    (default: nothing); it may raise to stop the run.
    """
    def saved(name: str) -> None:
        if on_save:
            on_save(name)

    prefix, suffix = ("local-", "-local") if local else ("", "")
    torch.manual_seed(recipe.seed)
    tower = CLIPVisionModel(build_config(recipe.spec).vision_config)
    if local:
        make_local(tower)
    pre = VisionPretrainer(tower)
    fit(lambda t: pre(**vision_batch(enc, recipe, prefix + "vision", t)), list(pre.parameters()),
        recipe.vision_steps, recipe.vision_lr, f"2/6 {prefix}vision tower")
    save(tower, out / f"shapes-vision{suffix}", {**base, "kind": "vision", "local": local,
         "stage": "vision pre-training (per-patch attributes)", "steps": {"vision": recipe.vision_steps}})
    saved(f"shapes-vision{suffix}")

    model = assemble(recipe, decoder, tower)
    meta = {**base, "kind": "vlm", "local": local}
    steps = {"lm": recipe.lm_steps, "vision": recipe.vision_steps, "stage1": recipe.stage1_steps}
    if local:
        steps = {"shapes-llava": "decoder initialised from shapes-llava", **steps}

    def snapshot(k: int) -> None:
        if not local and k in recipe.snapshots:
            save(model, out / f"shapes-llava-step{k}", {**meta, "stage": f"intermediate (global step {k})",
                 "steps": {**steps, "stage1": min(k, recipe.stage1_steps),
                           "stage2": max(0, k - recipe.stage1_steps)}}, processor)
            saved(f"shapes-llava-step{k}")

    for name, p in model.named_parameters():
        p.requires_grad_("multi_modal_projector" in name)
    fit(lambda t: model(**caption_batch(enc, recipe, prefix + "stage1", t)).loss, list(model.parameters()),
        recipe.stage1_steps, recipe.stage1_lr, f"3/6 {prefix}stage 1 (projector, captions)", on_step=snapshot)
    if not local:
        save(model, out / "shapes-llava-frozen", {**meta, "steps": steps,
             "stage": "stage 1: projector only (decoder and vision tower frozen)"}, processor)
        saved("shapes-llava-frozen")

    for name, p in model.named_parameters():
        p.requires_grad_("vision_tower" not in name)

    def after_step(k: int) -> None:
        if k:
            snapshot(recipe.stage1_steps + k)
        if monitor and k % monitor == 0:
            table = evaluate((model, processor), n=350, progress=False)
            model.train()
            tqdm.write(f"{prefix}stage 2 step {k}: " + " ".join(
                f"{r.question_type}={r.accuracy:.2f}" for r in table.itertuples()))

    fit(lambda t: model(**qa_batch(enc, recipe, prefix + "stage2", t)).loss, list(model.parameters()),
        stage2_steps, recipe.stage2_lr, f"4/6 {prefix}stage 2 (projector + decoder)", on_step=after_step)
    steps["stage2"] = stage2_steps
    save(model, out / f"shapes-llava{suffix}", {**meta, "steps": steps,
         "stage": "stage 2: visual instruction tuning"}, processor)
    saved(f"shapes-llava{suffix}")
    return model


def text_lm(recipe: Recipe, enc: Encoder, out: Path, base: dict, processor) -> LlamaForCausalLM:
    """Pre-train the text-only decoder (stage 1 of 6), save it as ``out / "shapes-lm"`` and return it."""
    torch.manual_seed(recipe.seed)
    lm = LlamaForCausalLM(build_config(recipe.spec).text_config)
    fit(lambda t: lm(**text_batch(enc, recipe, t)).loss, list(lm.parameters()), recipe.lm_steps, recipe.lm_lr,
        "1/6 text LM")
    save(lm, out / "shapes-lm", {**base, "kind": "lm", "stage": "text pre-training",
                                  "steps": {"lm": recipe.lm_steps}}, tokenizer=processor.tokenizer)
    return lm


def train_all(recipe: Recipe = Recipe(), out: Path = MODELS_DIR, eval_n: int = 1400, monitor: int = 0) -> dict:
    """Train every zoo checkpoint into ``out``, write the model cards; return the cards' index.

    ``monitor`` > 0 prints held-out accuracy every ``monitor`` steps of stage 2.
    """
    from analysis.zoo.cards import write_cards

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for config_file in out.glob("*/config.json"):  # stale checkpoints of an earlier zoo
        if "zoo" in json.loads(config_file.read_text()):
            shutil.rmtree(config_file.parent)
    enc, processor = Encoder(recipe.spec), build_processor(recipe.spec)
    base = dict(seed=recipe.seed, recipe=asdict(recipe), spec=asdict(recipe.spec))
    start, times = time.time(), {}

    # 1. text-only language model
    lm = text_lm(recipe, enc, out, base, processor)
    times["shapes-lm"] = time.time() - start

    # 2-4. vision tower, stage 1 (projector), stage 2 (projector + decoder)
    model = llava_stages(recipe, enc, processor, out, base, (lm.model, lm.lm_head), local=False,
                         stage2_steps=recipe.stage2_steps, monitor=monitor)
    times["shapes-llava"] = time.time() - start
    decoder = copy.deepcopy(model.model.language_model), copy.deepcopy(model.lm_head)

    # 5. fine-tune on a shifted answer vocabulary
    model.train()
    fit(lambda t: model(**qa_batch(enc, recipe, "ft", t, SHIFTED_ANSWERS)).loss, list(model.parameters()),
        recipe.ft_steps, recipe.ft_lr, "5/6 fine-tune (shifted answers)")
    steps = {"lm": recipe.lm_steps, "vision": recipe.vision_steps, "stage1": recipe.stage1_steps,
             "stage2": recipe.stage2_steps, "ft": recipe.ft_steps}
    save(model, out / "shapes-llava-ft", {**base, "kind": "vlm", "local": False, "answer_map": SHIFTED_ANSWERS,
         "steps": steps, "stage": "shapes-llava fine-tuned on shifted answers"}, processor)
    times["shapes-llava-ft"] = time.time() - start

    # 6. the patch-local variant: shapes-llava's decoder behind a tower that does not mix patches
    llava_stages(recipe, enc, processor, out, base, decoder, local=True, stage2_steps=recipe.local_steps,
                 monitor=monitor)
    times["shapes-llava-local"] = time.time() - start
    times["total"] = time.time() - start
    return write_cards(out, eval_n=eval_n, train_seconds=times)


class NotReproduced(RuntimeError):
    """A retrained checkpoint differs from the committed one: training is not deterministic here."""


def differing_tensors(a: Path, b: Path) -> dict[str, float]:
    """Return ``{tensor name: max |a - b|}`` for the tensors of two checkpoint folders that differ.

    Both folders hold a ``model.safetensors``; a tensor present in only one, or of another shape or
    dtype, counts as differing with ``inf``. An empty dict means every tensor is equal, bit for bit.
    """
    x, y = load_file(str(Path(a) / "model.safetensors")), load_file(str(Path(b) / "model.safetensors"))
    out = {}
    for name in sorted(set(x) | set(y)):
        if name not in x or name not in y or x[name].shape != y[name].shape or x[name].dtype != y[name].dtype:
            out[name] = float("inf")
        elif not torch.equal(x[name], y[name]):
            out[name] = float((x[name].float() - y[name].float()).abs().max())
    return out


def train_snapshots(recipe: Recipe = Recipe(), out: Path = MODELS_DIR, work: Path | None = None) -> dict:
    """Retrain ``shapes-llava`` into ``work``, check it against ``out``, add ``out``'s missing snapshots.

    Runs the first four stages of :func:`train_all` exactly as it does (text LM, vision tower, stage 1,
    stage 2; the fine-tuned and patch-local checkpoints are not trained), writing every checkpoint to
    the scratch folder ``work`` (default: a new temporary folder). Each checkpoint that ``out`` already
    holds (``shapes-lm``, ``shapes-vision``, ``shapes-llava-frozen``, ``shapes-llava`` and the existing
    ``shapes-llava-step<N>``) is compared with it tensor for tensor as soon as it is written; the first
    difference stops the run with :class:`NotReproduced` and ``out`` is left untouched. When all are
    equal, the ``shapes-llava-step<N>`` folders of ``recipe.snapshots`` that ``out`` lacks are copied
    into ``out``: no existing folder is rewritten. Model cards are not written (:func:`write_cards`).

    Returns ``{"work", "verified": [names equal to out's], "same_bytes": [names whose
    model.safetensors is byte-identical], "added": [names copied into out], "seconds"}``.
    """
    out = Path(out)
    work = _scratch(work, "zoo-snapshots-")
    start, verified, same_bytes = time.time(), [], []

    def check(name: str) -> None:
        if not (out / name / "model.safetensors").is_file():
            return
        diff = differing_tensors(work / name, out / name)
        if diff:
            worst = sorted(diff.items(), key=lambda kv: -kv[1])[:5]
            raise NotReproduced(
                f"retrained {name} differs from {out / name} in {len(diff)} tensors (largest: "
                + ", ".join(f"{k} {v:.3g}" for k, v in worst) + f"); torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads. Nothing was written to {out}; the retrained "
                f"checkpoints are in {work}.")
        verified.append(name)
        if (work / name / "model.safetensors").read_bytes() == (out / name / "model.safetensors").read_bytes():
            same_bytes.append(name)
        tqdm.write(f"{name}: equal to {out / name}")

    _stages_1_to_4(recipe, work, on_save=check)
    added = []
    for k in recipe.snapshots:
        name = f"shapes-llava-step{k}"
        if not (out / name).exists():
            shutil.copytree(work / name, out / name)
            added.append(name)
    return dict(work=str(work), verified=verified, same_bytes=same_bytes, added=added,
                seconds=time.time() - start)


SECOND_RUN = "shapes-llava-run2"
SECOND_RUN_COMMAND = "python -m analysis.zoo.train --second-run"


def train_second_run(recipe: Recipe = Recipe(), out: Path = MODELS_DIR, work: Path | None = None) -> list[str]:
    """Run stages 1-4 of the recipe again in ``work`` and keep its trajectory in ``out`` (see :func:`keep_second_run`).

    The same code and seed as ``shapes-llava``'s run; on a machine whose float rounding differs from
    the one that built the zoo it is a second training run (a replicate), with its own 20 snapshots.
    57 min measured with one thread on a shared 2-core machine. Returns the names written.
    """
    work = _scratch(work, "zoo-run2-")
    _stages_1_to_4(recipe, work)
    return keep_second_run(work, out)


def _scratch(work: Path | None, prefix: str) -> Path:
    """Return ``work`` (created if missing), or a new temporary folder named ``prefix...``."""
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


def _stages_1_to_4(recipe: Recipe, work: Path, on_save: Callable[[str], None] | None = None) -> None:
    """Train stages 1-4 of :func:`train_all` into ``work`` exactly as it does (text LM, vision tower, stage 1 with
    ``shapes-llava-frozen``, stage 2 with the snapshots and ``shapes-llava``); ``on_save(name)`` after each."""
    enc, processor = Encoder(recipe.spec), build_processor(recipe.spec)
    base = dict(seed=recipe.seed, recipe=asdict(recipe), spec=asdict(recipe.spec))
    lm = text_lm(recipe, enc, work, base, processor)
    if on_save:
        on_save("shapes-lm")
    llava_stages(recipe, enc, processor, work, base, (lm.model, lm.lm_head), local=False,
                 stage2_steps=recipe.stage2_steps, on_save=on_save)


def keep_second_run(work: Path, out: Path = MODELS_DIR, prefix: str = SECOND_RUN) -> list[str]:
    """Copy the stage-1 -> stage-2 trajectory of a run in ``work`` into ``out`` under ``prefix``.

    ``work``'s ``shapes-llava-step<N>``, ``shapes-llava-frozen`` and ``shapes-llava`` become
    ``<prefix>-step<N>``, ``<prefix>-frozen`` and ``<prefix>``, replacing earlier copies; each config's
    ``zoo`` record gains ``run`` (what the run is) and ``rebuild`` (the command). The run's text LM and
    vision tower are not kept (its checkpoints hold their trained copies). Returns the names written.
    """
    work, out = Path(work), Path(out)
    names = {n: prefix + n.removeprefix("shapes-llava") for n in list_checkpoints(work, kind="vlm")
             if re.fullmatch(r"shapes-llava(-frozen|-step\d+)?", n)}
    for source, target in names.items():
        shutil.rmtree(out / target, ignore_errors=True)
        shutil.copytree(work / source, out / target)
        config_file = out / target / "config.json"
        config = json.loads(config_file.read_text())
        config["zoo"].update(run=f"second run of the recipe (replicate of {source}): same code and seed, "
                                 "another machine's float rounding", rebuild=SECOND_RUN_COMMAND)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return sorted(names.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="train every checkpoint of the zoo")
    parser.add_argument("--snapshots", action="store_true",
                        help="retrain up to shapes-llava in a scratch folder, check it against --out and add "
                             "the shapes-llava-step<N> snapshots --out lacks (then rewrite the cards)")
    parser.add_argument("--second-run", action="store_true",
                        help=f"train stages 1-4 again in a scratch folder and keep its trajectory as {SECOND_RUN}"
                             "(-frozen|-step<N>) in --out (then rewrite the cards)")
    parser.add_argument("--cards", action="store_true", help="only re-evaluate --out and rewrite its model cards")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder of --snapshots / --second-run (default: a temp dir)")
    parser.add_argument("--no-cards", action="store_true", help="with --snapshots: do not rewrite the cards")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default: models/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (quick runs)")
    parser.add_argument("--eval-n", type=int, default=1400, help="held-out questions per checkpoint card")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (results depend on it; the zoo used 1)")
    parser.add_argument("--monitor", type=int, default=0, help="print held-out accuracy every N stage-2 steps")
    args = parser.parse_args(argv)
    if args.all + args.snapshots + args.second_run + args.cards != 1:
        parser.error("pass exactly one of --all, --snapshots, --second-run, --cards")
    torch.set_num_threads(args.threads)
    recipe = Recipe(seed=args.seed)
    if args.scale != 1.0:
        recipe = recipe.scaled(args.scale)
    if args.all:
        print(json.dumps(train_all(recipe, args.out, args.eval_n, args.monitor)["summary"], indent=1))
        return
    from analysis.zoo.cards import write_cards

    if args.snapshots:
        report = train_snapshots(recipe, args.out, args.work)
        print(json.dumps(report, indent=1))
        if args.no_cards:
            return
    if args.second_run:
        print("\n".join(train_second_run(recipe, args.out, args.work)))
    print(json.dumps(write_cards(args.out, eval_n=args.eval_n, train_seconds=previous_times(args.out))["summary"],
                     indent=1))


def previous_times(out: Path) -> dict | None:
    """Return the training times recorded in ``out / "zoo.json"`` (None if there are none)."""
    index = Path(out) / "zoo.json"
    return json.loads(index.read_text()).get("train_seconds") if index.is_file() else None


if __name__ == "__main__":
    main()
