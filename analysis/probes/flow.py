"""Cross-modal information flow: attention knockout sweeps and the logit lens.

Reference: Zhang et al., "Cross-modal Information Flow in Multimodal Large Language Models"
(CVPR 2025). An edge set ``A->B`` blocks queries at positions ``B`` from attending to keys at
positions ``A`` in a window of layers; the effect is the relative change of the probability of
the answer the model originally predicted, ``100 * (p_new - p_base) / p_base``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.data.samples import Sample, as_samples
from analysis.errors import InputError
from analysis.models.answers import answer_tokens, is_correct
from analysis.models.inputs import PreparedInputs, length_batches
from analysis.models.numerics import finite
from analysis.models.sites import Site, reading, sites
from analysis.probes.backend import Edges
from analysis.probes.knockout import first_recomputed, knockout_logits, knockout_probs, unmodified_run

BLOCKS: dict[str, tuple[str, str]] = {
    "question->last": ("question", "last"),
    "image->last": ("image", "last"),
    "last->last": ("last", "last"),
    "image->question": ("image", "question"),
    "related->question": ("related", "question"),
    "other->question": ("other_image", "question"),
}
DEFAULT_BLOCKS = ("question->last", "image->last", "last->last", "image->question")
KNOCKOUT_COLUMNS = ["sample", "question_type", "block", "layer", "first_layer", "last_layer", "answer", "p_base",
                    "p_new", "change"]
REGION_COLUMNS = ["sample", "question_type", "n_related", "n_other_blocked", "correct_base",
                  "correct_related_blocked", "correct_other_blocked"]


@dataclass
class KnockoutResult:
    """An attention-knockout sweep (``information_flow``).

    Attributes:
        frame: tidy, one row per sample x edge set x window centre (columns ``KNOCKOUT_COLUMNS``):
            ``layer`` is the window centre, ``first_layer`` / ``last_layer`` its ends (decoder
            layers), ``answer`` the predicted token, ``p_base`` / ``p_new`` its probability
            without / with the block, ``change`` = ``100 * (p_new - p_base) / p_base`` (percent).
        n_samples: samples given.
        n_correct: samples kept (answered correctly, or all with ``only_correct=False``).
        window: layers blocked at once.
        skipped: ``{"sample", "block"}`` pairs left out because the edge set names no position in
            that sample (e.g. no "other" patches when the question's objects cover the grid).
        lens: with ``information_flow(..., lens=True)``, the logit lens at the last position of the
            kept samples, read from the sweep's own unmodified forwards: the frame
            ``logit_lens(vlm, samples, only_correct=only_correct)`` gives (one row per sample x layer x
            tracked token); else None.
    """

    frame: pd.DataFrame
    n_samples: int
    n_correct: int
    window: int
    skipped: list[dict] = field(default_factory=list)
    lens: pd.DataFrame | None = None

    def __post_init__(self):
        missing = set(KNOCKOUT_COLUMNS) - set(self.frame.columns)
        if missing:
            raise ValueError(f"a knockout frame needs the columns {sorted(missing)}")
        if not 0 <= self.n_correct <= self.n_samples or self.frame["sample"].nunique() > self.n_correct:
            raise ValueError("a knockout result keeps at most n_correct <= n_samples samples")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.lens is not None and self.lens["sample"].nunique() > self.n_correct:
            raise ValueError("the logit lens reads the kept samples only")

    def select(self, blocks: str | Sequence[str]) -> "KnockoutResult":
        """Return the result restricted to the edge set(s) ``blocks`` (same samples, counts and window).

        One sweep over several edge sets runs each sample's unmodified forward once; ``select`` then
        splits it into the results that separate sweeps over those edge sets would have given.
        """
        blocks = [blocks] if isinstance(blocks, str) else list(blocks)
        unknown = sorted(set(blocks) - set(self.frame["block"]) - {s["block"] for s in self.skipped})
        if unknown:
            raise InputError(f"this result has no edge sets {unknown}; it has {sorted(set(self.frame['block']))}")
        return KnockoutResult(self.frame[self.frame["block"].isin(blocks)].reset_index(drop=True),
                              n_samples=self.n_samples, n_correct=self.n_correct, window=self.window,
                              skipped=[s for s in self.skipped if s["block"] in blocks], lens=self.lens)


@dataclass
class RegionKnockoutResult:
    """Accuracy with the question's region cut off (``region_knockout``).

    Attributes:
        frame: one row per sample (columns ``REGION_COLUMNS``; the ``correct_*`` columns are bools).
        n_samples: samples given.
        skipped: ids of samples left out because their objects cover no image patch or every one.
    """

    frame: pd.DataFrame
    n_samples: int
    skipped: list = field(default_factory=list)

    def __post_init__(self):
        missing = set(REGION_COLUMNS) - set(self.frame.columns)
        if missing:
            raise ValueError(f"a region-knockout frame needs the columns {sorted(missing)}")
        if len(self.frame) + len(self.skipped) != self.n_samples:
            raise ValueError("every sample is either in the frame or skipped")

    def accuracy(self) -> pd.Series:
        """Return the accuracy (0..1) without a block, with the related and with as many other patches blocked."""
        return self.frame[REGION_COLUMNS[4:]].mean()


def block_positions(prepared: PreparedInputs, block: str, boxes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(sources, targets)`` positions of a named edge set.

    Args:
        prepared: the prepared input.
        block: one of ``BLOCKS`` (e.g. ``"image->question"``).
        boxes: ground-truth region (original pixels) for ``related`` / ``other`` image patches.
    """
    if block not in BLOCKS:
        raise InputError(f"unknown edge set {block!r}; use one of {', '.join(BLOCKS)}")

    def group(name: str) -> torch.Tensor:
        if name in ("related", "other_image"):
            if not boxes:
                raise InputError(
                    f"{block!r} needs the question's ground-truth region: give the sample boxes "
                    "(x0, y0, x1, y1) in image pixels, or drop this edge set"
                )
            related = prepared.related_positions(boxes)
            if name == "related":
                return related
            image = prepared.image_positions
            return image[~torch.isin(image, related)]
        if name == "last":
            return torch.tensor([prepared.last_position])
        return prepared.positions(name)

    source, target = BLOCKS[block]
    return group(source), group(target)


# The information-flow paper blocks 9 consecutive layers of 32-layer models.
PAPER_WINDOW, PAPER_LAYERS = 9, 32


def default_window(n_layers: int) -> int:
    """Return the paper's window scaled to ``n_layers``: the same fraction (9 of 32), at least 1."""
    return max(1, round(PAPER_WINDOW * n_layers / PAPER_LAYERS))


def layer_windows(n_layers: int, window: int) -> list[tuple[int, range]]:
    """Return ``(centre, layers)`` for every centre layer: ``[c - k//2, c + ceil(k/2))`` clipped."""
    if not 1 <= window <= n_layers:
        raise InputError(f"window must be between 1 and the number of layers ({n_layers}); got {window}")
    return [(c, range(max(0, c - window // 2), min(n_layers, c + math.ceil(window / 2)))) for c in range(n_layers)]


def information_flow(
    vlm,
    samples: Iterable,
    blocks: Sequence[str] = DEFAULT_BLOCKS,
    window: int | None = None,
    only_correct: bool = True,
    batch_size: int = 16,
    reuse_prefix: bool = True,
    lens: bool = False,
    progress: bool = True,
) -> KnockoutResult:
    """Knockout sweep: block each edge set in a sliding window of layers, for every sample.

    Args:
        vlm: the model.
        samples: ``Sample`` objects, dicts or zoo samples (image, question, answer, boxes,
            question_type); see ``analysis.data.samples.as_samples``.
        blocks: names from ``BLOCKS``.
        window: layers blocked at once, centred on each layer (``k`` of the paper). Default
            ``default_window(vlm.n_layers)``: the paper's 9 of 32 layers as the same fraction of this
            model's depth, at least 1 (9 for 32 layers, 1 for the 4-layer zoo models); the window used
            is ``result.window``. An explicit window larger than the model is an error.
        only_correct: keep only correctly answered samples (default; rule ``"first_token"`` of
            ``analysis.models.answers``).
        batch_size, reuse_prefix: see ``knockout_probs``.
        lens: also read the logit lens at the last position (``logit_lens`` with its defaults:
            ``positions=("last",)``, ``final_norm=True``) from the same unmodified forwards, into
            ``result.lens``: no forward of its own (``logit_lens`` runs one per sample). Memory: one
            ``(hidden,)`` state more per sample while it runs.
        progress: show a progress bar over samples.

    Returns:
        A ``KnockoutResult``: the tidy frame and ``n_samples``, ``n_correct``, ``window``, ``skipped``
        (and ``lens`` when asked).
    """
    samples = as_samples(samples)
    window = default_window(vlm.n_layers) if window is None else window
    windows = layer_windows(vlm.n_layers, window)
    rows, n_correct, skipped, lens_rows = [], 0, [], []
    last_layer = Site("resid_post", vlm.n_layers - 1)
    for sample in tqdm(samples, desc="knockout", disable=not progress):
        prepared = vlm.prepare(sample.image, sample.question)
        configs, meta, missing = [], [], []
        for block in blocks:
            sources, targets = block_positions(prepared, block, sample.boxes)
            if sources.numel() == 0 or targets.numel() == 0:  # e.g. objects covering every patch of a coarse grid
                missing.append({"sample": sample.id, "block": block})
                continue
            for centre, layers in windows:
                configs.append([Edges.make(sources, targets, layers)])
                meta.append((block, centre, layers))
        # One unmodified forward: p_base and correctness from its logits, the states every configuration
        # resumes from (analysis.probes.knockout) and, with the last layer's output, the logit lens.
        final = {}
        with reading(vlm, [last_layer], on_value=lambda s, state: final.__setitem__(s, state[0, -1:].clone())) \
                if lens else contextlib.nullcontext():
            unmodified = unmodified_run(vlm, prepared, first_recomputed(vlm, prepared, configs, reuse_prefix))
        predicted = int(unmodified.logits.argmax())
        p_base = float(torch.softmax(unmodified.logits, dim=-1)[predicted])
        if only_correct:
            if sample.answer is None:
                raise InputError("only_correct=True needs each sample's answer; pass answers or only_correct=False")
            if not is_correct(vlm, answer_tokens(vlm, prepared.prompt, sample.answer), predicted=predicted):
                continue
        n_correct += 1
        skipped += missing
        if lens:  # resid_post l == resid_pre l + 1, kept from a position <= the last
            stream = {Site("resid_post", l): unmodified.states[l + 1][0, -1:] for l in range(vlm.n_layers - 1)}
            lens_rows += _lens_rows(vlm, sample, prepared, [prepared.last_position], predicted,
                                    {**stream, **final}, final_norm=True, only_correct=False)
        if not configs:
            continue
        p_new = knockout_probs(vlm, prepared, configs, predicted, batch_size, reuse_prefix, unmodified)
        answer = vlm.tokenizer.decode([predicted]).strip()
        for (block, centre, layers), p in zip(meta, p_new.tolist()):
            rows.append(
                {"sample": sample.id, "question_type": sample.question_type, "block": block, "layer": centre,
                 "first_layer": layers.start, "last_layer": layers.stop - 1, "answer": answer,
                 "p_base": p_base, "p_new": p, "change": 100.0 * (p - p_base) / p_base}
            )
    if only_correct and n_correct == 0:
        raise InputError(f"none of the {len(samples)} samples was answered correctly; nothing to knock out")
    if not rows:
        raise InputError(f"no sample has positions for the edge sets {list(blocks)} (e.g. the question's objects "
                         "cover every image patch, so there are no other patches); use other samples or edge sets")
    return KnockoutResult(pd.DataFrame(rows, columns=KNOCKOUT_COLUMNS), n_samples=len(samples), n_correct=n_correct,
                          window=window, skipped=skipped, lens=pd.DataFrame(lens_rows) if lens else None)


def region_knockout(vlm, samples: Iterable, seed: int = 0, batch_size: int = 16,
                    progress: bool = True) -> RegionKnockoutResult:
    """Accuracy when the question's related image patches are cut off, against as many other patches.

    For each sample with a ground-truth region, three configurations run at once: the unmodified
    model, blocking every later position from the related image tokens in all layers, and the
    same for a seeded random choice of as many other image tokens (all of them if fewer exist).

    Returns:
        A ``RegionKnockoutResult``: one row per sample (``sample``, ``question_type``,
        ``n_related``, ``n_other_blocked`` and the bools ``correct_base``,
        ``correct_related_blocked``, ``correct_other_blocked``; rule ``"first_token"``) and the
        samples skipped because their objects cover no image patch or every one.
    """
    generator = torch.Generator().manual_seed(seed)
    rows, skipped = [], []
    samples = as_samples(samples)
    for sample in tqdm(samples, desc="region knockout", disable=not progress):
        if sample.answer is None:
            raise InputError(f"sample {sample.id} has no answer; region knockout measures accuracy")
        prepared = vlm.prepare(sample.image, sample.question)
        related, targets = block_positions(prepared, "related->question", sample.boxes)
        other, _ = block_positions(prepared, "other->question", sample.boxes)
        other = other[torch.randperm(len(other), generator=generator)[: len(related)]]
        if len(related) == 0 or len(other) == 0:  # the objects cover no patch (cropped away) or every patch
            skipped.append(sample.id)
            continue
        later = torch.arange(int(prepared.image_positions.max()) + 1, prepared.length)
        every_layer = range(vlm.n_layers)
        configs = [[], [Edges.make(related, later, every_layer)], [Edges.make(other, later, every_layer)]]
        predicted = knockout_logits(vlm, prepared, configs, batch_size).argmax(-1).tolist()
        gold = answer_tokens(vlm, prepared.prompt, sample.answer)
        correct = [is_correct(vlm, gold, predicted=p) for p in predicted]
        rows.append({"sample": sample.id, "question_type": sample.question_type, "n_related": len(related),
                     "n_other_blocked": len(other), "correct_base": correct[0],
                     "correct_related_blocked": correct[1], "correct_other_blocked": correct[2]})
    if not rows:
        raise InputError("no sample has both related and other image patches (the objects cover no patch or "
                         "every patch of the grid); use other samples")
    return RegionKnockoutResult(pd.DataFrame(rows, columns=REGION_COLUMNS), n_samples=len(samples), skipped=skipped)


def _tracked_tokens(vlm, prepared: PreparedInputs, sample: Sample, predicted: int) -> dict[str, int]:
    def target(text: str) -> int:
        return answer_tokens(vlm, prepared.prompt, text).target

    tracked = {"prediction": predicted}
    if sample.answer:
        tracked["answer"] = target(sample.answer)
        capital = target(sample.answer[:1].upper() + sample.answer[1:])
        if capital != tracked["answer"]:  # lower-casing tokenizers give the same token
            tracked["answer (capitalised)"] = capital
    if sample.foil:
        tracked["foil"] = target(sample.foil)
    return tracked


def logit_lens(
    vlm,
    samples: Iterable,
    positions: Sequence[str | int] = ("last",),
    final_norm: bool = True,
    only_correct: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Probability of the answer token read from each layer's residual stream.

    Args:
        vlm: the model.
        samples: as for ``information_flow``; ``answer`` and ``foil`` are tracked when given.
        positions: role names (``"last"``, ``"question"``) or absolute positions.
        final_norm: apply the final norm before unembedding intermediate layers (the reference
            code does not; without it early layers are on a different scale).
        only_correct: keep only correctly answered samples.
        batch_size: inputs per forward (default 16). Inputs of the same token length run
            together, so no padding enters a forward; memory: ``4 * batch_size`` prepared inputs
            at a time and one batch's residual stream (``batch x T x hidden`` per layer).
        progress: show a progress bar.

    Returns:
        Tidy DataFrame, one row per sample x layer x position x tracked token: ``sample``,
        ``question_type``, ``layer`` (decoder layer whose output, site ``resid_post``, is read), ``position``,
        ``role``, ``tracked`` (``prediction``, ``answer``, ``answer (capitalised)``, ``foil``),
        ``token``, ``prob``, ``rank`` (0 = top-1); samples in the order given.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer; got {batch_size!r}")
    samples = as_samples(samples)
    rows = []
    with tqdm(total=len(samples), desc="logit lens", disable=not progress) as bar:
        for start in range(0, len(samples), 4 * batch_size):
            window = samples[start:start + 4 * batch_size]
            prepared = [vlm.prepare(sample.image, sample.question) for sample in window]
            chosen = [_lens_positions(p, positions) for p in prepared]
            found: dict[int, list[dict]] = {}
            for group in length_batches([p.length for p in prepared], batch_size):
                batch, _ = vlm.adapter.pad([prepared[i].inputs for i in group])
                with torch.no_grad(), reading(vlm, sites(vlm, ["resid_post"])) as stream:
                    logits = vlm.model(**batch, logits_to_keep=1).logits[:, -1].float()
                for row, i in enumerate(group):
                    found[i] = _lens_rows(vlm, window[i], prepared[i], chosen[i], int(logits[row].argmax()),
                                          {s: state[row, chosen[i]] for s, state in stream.items()}, final_norm,
                                          only_correct)
                bar.update(len(group))
            rows += [row for i in range(len(window)) for row in found[i]]
    return pd.DataFrame(rows)


def _lens_positions(prepared: PreparedInputs, positions: Sequence[str | int]) -> list[int]:
    """Return the absolute positions the logit lens reads for one input."""
    chosen = []
    for spec in positions:
        chosen += prepared.positions(spec).tolist() if isinstance(spec, str) and spec != "last" else (
            [prepared.last_position] if spec == "last" else [int(spec)])
    if any(not 0 <= p < prepared.length for p in chosen):
        raise InputError(f"positions must lie in 0..{prepared.length - 1}")
    return chosen


def _lens_rows(vlm, sample: Sample, prepared: PreparedInputs, chosen: list[int], predicted: int,
               stream: dict, final_norm: bool, only_correct: bool) -> list[dict]:
    """Return one input's logit-lens rows from its ``(len(chosen), hidden)`` residual stream at the ``chosen``
    positions per site, sites in layer order (none if skipped)."""
    if only_correct and (sample.answer is None or not is_correct(
            vlm, answer_tokens(vlm, prepared.prompt, sample.answer), predicted=predicted)):
        return []
    tracked = _tracked_tokens(vlm, prepared, sample, predicted)
    ids = torch.tensor(list(tracked.values()))
    names = {token: vlm.tokenizer.decode([token]).strip() for token in tracked.values()}
    rows = []
    for s, state in stream.items():
        with torch.no_grad():
            logits = finite(vlm, vlm.unembed(state, final_norm=final_norm).float(), "logit-lens logits")
            probs = torch.softmax(logits, dim=-1).cpu()
        ranks = (probs[:, None, :] > probs[:, ids, None]).sum(-1)
        for i, pos in enumerate(chosen):
            for j, (name, token) in enumerate(tracked.items()):
                rows.append(
                    {"sample": sample.id, "question_type": sample.question_type, "layer": s.layer, "position": pos,
                     "role": prepared.roles[pos], "tracked": name, "token": names[token],
                     "prob": float(probs[i, token]), "rank": int(ranks[i, j])}
                )
    return rows
