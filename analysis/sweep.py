"""Sharded, resumable sweeps of the long probes, on one process or many (torch.distributed).

``python -m analysis sweep PROBE --model M --samples SPEC --out DIR [options]`` runs a probe over
every sample, one sample at a time, and keeps every finished sample on disk::

    python -m analysis sweep information_flow --model zoo:shapes-llava --samples shapes:1610 --out runs/flow
    torchrun --nproc_per_node 8 -m analysis sweep information_flow --model /data/llava-1.5-7b-hf \\
        --samples questions.jsonl --out runs/flow-7b --window 9
    accelerate launch -m analysis sweep logit_lens ...   # same thing through accelerate's launcher

Probes (``PROBES``): ``information_flow`` (attention knockout), ``logit_lens``,
``region_knockout`` and ``capture`` (pooled hidden states for alignment / shift studies).

How it works:

* Every process (rank) takes a deterministic shard of the samples: rank ``r`` of ``W`` gets the
  samples with index ``i % W == r``. Ranks find each other through torch.distributed (``gloo`` on
  CPU, ``nccl`` on CUDA; ``torchrun`` and ``accelerate launch`` set ``RANK`` / ``WORLD_SIZE``); one
  plain process is world size 1 and needs no launcher. On CUDA, rank ``r`` uses ``cuda:LOCAL_RANK``
  unless ``--device`` or ``--device-map`` says otherwise.
* Each finished sample is written as ``DIR/parts/<index>.parquet`` (a temporary file renamed into
  place, so a kill never leaves half a file). A sample whose part exists is never recomputed:
  starting a killed run again with the same arguments finishes only the rest.
* ``DIR/sweep.json`` records the arguments that determine the numbers (probe, model, samples and
  a digest of them, dtype, probe options) and the world size. A run with other arguments, or with
  another number of processes, into the same folder is refused (``SweepFolderError``).
* When every rank is done, rank 0 merges the parts, in sample order, into ``DIR/results.parquet``
  (the probe's tidy table, exactly as the probe function returns it) and writes
  ``DIR/provenance.json`` (arguments, model name / config hash / dtype, git commit, package
  versions, and per attempt which rank computed or reused how many samples).

``load_results(DIR)`` returns the probe's own result type (``KnockoutResult``,
``RegionKnockoutResult``, a DataFrame, ``Activations``), so a notebook can plot from a folder
that a cluster computed (the notebooks' ``results`` parameter).

Samples (``--samples``): ``shapes:N`` or ``shapes:N@SEED`` (the first ``N`` questions of the shapes
world stream ``SEED``, as the notebooks draw them), or a ``.jsonl`` / ``.json`` / ``.csv`` /
``.parquet`` file with the columns ``image`` (path, relative to the file's folder or absolute) and
``question``, and optionally ``answer``, ``boxes`` (a JSON list of ``[x0, y0, x1, y1]``),
``question_type``, ``foil`` and ``id``.

Per-sample seeding: ``region_knockout`` draws its random "other" patches from a generator seeded
with ``(seed, sample index)``, so a sample's numbers do not depend on which rank ran it (they can
differ from one ``analysis.probes.region_knockout`` call over the whole list, which draws from one
generator in order).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis.data.samples import Sample, as_samples
from analysis.errors import InputError, VLMProbesError

FORMAT = 1
"""Version of the folder layout, recorded in ``sweep.json``."""
SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.parquet"
PROVENANCE_FILE = "provenance.json"
PARTS_DIR = "parts"
_META_KEY = b"vlm_probes"


class SweepFolderError(InputError):
    """A sweep folder that holds another run (other arguments, another world size) or no finished run."""


class SampleFileError(VLMProbesError, FileNotFoundError):
    """A ``--samples`` file that is missing or unreadable, or names images that do not exist."""


# --- samples ------------------------------------------------------------------------------------
def load_samples(spec: str) -> tuple[list[Sample], str]:
    """Return ``(samples, digest)`` for a ``--samples`` spec; the digest changes with the samples' content.

    Args:
        spec: ``shapes:N`` / ``shapes:N@SEED``, or a path to a ``.jsonl``, ``.json``, ``.csv`` or
            ``.parquet`` sample file (see the module docstring).

    Raises:
        SampleFileError: the file does not exist, cannot be read, or names missing images.
        InputError: a malformed spec or file.
    """
    spec = str(spec)
    if spec.startswith("shapes:"):
        from analysis.data.shapes import make_samples

        body = spec.removeprefix("shapes:")
        count, _, seed = body.partition("@")
        try:
            n, seed = int(count), int(seed or 0)
        except ValueError:
            raise InputError(f"--samples {spec!r}: write shapes:N or shapes:N@SEED (e.g. shapes:1610@0)") from None
        if n < 1:
            raise InputError(f"--samples {spec!r}: N must be at least 1")
        digest = hashlib.sha256(f"shapes:{n}@{seed}".encode()).hexdigest()[:16]
        return as_samples(make_samples(n, seed=seed)), digest
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SampleFileError(
            f"sample file {str(path)!r} does not exist; pass a .jsonl/.json/.csv/.parquet file with the columns "
            "image and question (optionally answer, boxes, question_type, foil, id), or shapes:N[@SEED]"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            records = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        elif suffix == ".json":
            records = json.loads(data)
        elif suffix == ".csv":
            records = pd.read_csv(io.BytesIO(data), keep_default_na=False).to_dict("records")
        elif suffix == ".parquet":
            records = pd.read_parquet(io.BytesIO(data)).to_dict("records")
        else:
            raise InputError(f"sample file {str(path)!r}: use a .jsonl, .json, .csv or .parquet file")
    except (ValueError, OSError) as err:
        raise SampleFileError(f"cannot read sample file {str(path)!r}: {err}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(f"sample file {str(path)!r} must hold a list of records (one per sample)")
    missing_images = []
    for index, record in enumerate(records):
        for key in ("image", "question"):
            if not record.get(key) and record.get(key) != 0:
                raise InputError(f"sample file {str(path)!r}: record {index} has no {key!r}")
        image = Path(str(record["image"])).expanduser()
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            missing_images.append(str(image))
        record["image"] = str(image)
        for key in ("answer", "question_type", "foil", "id"):
            if record.get(key) in ("", None) or (isinstance(record.get(key), float) and np.isnan(record[key])):
                record.pop(key, None)
        boxes = record.get("boxes")
        if isinstance(boxes, str):
            record["boxes"] = json.loads(boxes) if boxes.strip() else None
        if record.get("boxes") is not None:
            record["boxes"] = [tuple(int(v) for v in box) for box in record["boxes"]]
    if missing_images:
        raise SampleFileError(f"sample file {str(path)!r} names {len(missing_images)} image(s) that do not exist, "
                              f"e.g. {missing_images[0]!r}; image paths are relative to the sample file's folder")
    return as_samples(records), digest


# --- the probes a sweep runs -----------------------------------------------------------------------
@dataclass
class Probe:
    """One sweepable probe: its options, how to run one sample and how to rebuild its result."""

    name: str
    options: dict[str, Any]
    run: Callable[..., tuple[pd.DataFrame, dict]]
    assemble: Callable[[pd.DataFrame, list[dict], dict], Any]
    columns: list[str]
    help: str = ""


def _window(vlm, options) -> int:
    from analysis.probes.flow import default_window

    return options["window"] if options["window"] is not None else default_window(vlm.n_layers)


def _run_flow(vlm, sample: Sample, index: int, options: dict) -> tuple[pd.DataFrame, dict]:
    from analysis.probes.flow import KNOCKOUT_COLUMNS, block_positions, information_flow

    if options["only_correct"] and sample.answer is None:
        raise InputError(f"sample {sample.id!r} has no answer; information_flow keeps correctly answered samples "
                         "only (give answers, or pass --all)")
    prepared = vlm.prepare(sample.image, sample.question)
    blocks, skipped = [], []
    for block in options["blocks"]:
        sources, targets = block_positions(prepared, block, sample.boxes)
        (blocks if sources.numel() and targets.numel() else skipped).append(block)
    if not blocks:  # nothing to block in this sample; it still counts as kept when answered correctly
        from analysis.models.answers import answer_tokens, is_correct, next_token_logits

        predicted = int(next_token_logits(vlm, prepared).argmax())
        kept = not options["only_correct"] or is_correct(vlm, answer_tokens(vlm, prepared.prompt, sample.answer),
                                                         predicted=predicted)
        return pd.DataFrame(columns=KNOCKOUT_COLUMNS), {"kept": bool(kept), "skipped": skipped if kept else []}
    try:
        result = information_flow(vlm, [sample], blocks=blocks, window=_window(vlm, options),
                                  only_correct=options["only_correct"], batch_size=options["batch_size"],
                                  reuse_prefix=options["reuse_prefix"], progress=False)
    except InputError:
        # With the answer, edge sets and window checked, the one error left for a single sample with
        # positions in every edge set is "answered incorrectly": the sample is not kept.
        return pd.DataFrame(columns=KNOCKOUT_COLUMNS), {"kept": False, "skipped": []}
    return result.frame, {"kept": True, "skipped": skipped}


def _assemble_flow(frame: pd.DataFrame, metas: list[dict], sweep: dict):
    from analysis.probes.flow import KnockoutResult

    skipped = [{"sample": m["id"], "block": b} for m in metas for b in m["skipped"]]
    return KnockoutResult(frame, n_samples=len(metas), n_correct=sum(m["kept"] for m in metas),
                          window=sweep["model"]["window"], skipped=skipped)


LENS_COLUMNS = ["sample", "question_type", "layer", "position", "role", "tracked", "token", "prob", "rank"]


def _run_lens(vlm, sample: Sample, index: int, options: dict) -> tuple[pd.DataFrame, dict]:
    from analysis.probes.flow import logit_lens

    positions = [int(p) if p.lstrip("-").isdigit() else p for p in options["positions"]]
    frame = logit_lens(vlm, [sample], positions=positions, final_norm=options["final_norm"],
                       only_correct=options["only_correct"], progress=False)
    return (frame if len(frame) else pd.DataFrame(columns=LENS_COLUMNS)), {"kept": bool(len(frame))}


def _sample_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _run_region(vlm, sample: Sample, index: int, options: dict) -> tuple[pd.DataFrame, dict]:
    from analysis.probes.flow import REGION_COLUMNS, block_positions, region_knockout

    if sample.answer is None:
        raise InputError(f"sample {sample.id!r} has no answer; region knockout measures accuracy")
    prepared = vlm.prepare(sample.image, sample.question)
    related, _ = block_positions(prepared, "related->question", sample.boxes)
    other, _ = block_positions(prepared, "other->question", sample.boxes)
    if len(related) == 0 or len(other) == 0:
        return pd.DataFrame(columns=REGION_COLUMNS), {"kept": False}
    result = region_knockout(vlm, [sample], seed=_sample_seed(options["seed"], index),
                             batch_size=options["batch_size"], progress=False)
    return result.frame, {"kept": True}


def _assemble_region(frame: pd.DataFrame, metas: list[dict], sweep: dict):
    from analysis.probes.flow import RegionKnockoutResult

    frame = frame.astype({c: bool for c in frame.columns if c.startswith("correct_")})
    return RegionKnockoutResult(frame, n_samples=len(metas), skipped=[m["id"] for m in metas if not m["kept"]])


CAPTURE_COLUMNS = ["sample", "question_type", "answer", "prediction", "prediction_id", "correct", "n_positions",
                   "site", "role", "features"]


def _run_capture(vlm, sample: Sample, index: int, options: dict) -> tuple[pd.DataFrame, dict]:
    from analysis.capture import AllDroppedError, capture

    layers = None if options["layers"] is None else [int(v) for v in options["layers"]]
    try:
        acts = capture(vlm, [sample], layers=layers, roles=options["roles"], kinds=options["kinds"],
                       pool=options["pool"], batch_size=1, progress=False)
    except AllDroppedError as err:
        return pd.DataFrame(columns=CAPTURE_COLUMNS), {"kept": False, "reason": str(err.dropped["reason"].iloc[0])}
    meta = acts.meta.iloc[0]
    rows = []
    for (s, role), value in acts.features.items():
        rows.append({"sample": meta["sample"], "question_type": meta["question_type"], "answer": meta["answer"],
                     "prediction": meta["prediction"], "prediction_id": int(meta["prediction_id"]),
                     "correct": meta["correct"], "n_positions": int(meta["n_positions"]), "site": s.name,
                     "role": role, "features": value[0].numpy().astype(np.float32)})
    return pd.DataFrame(rows, columns=CAPTURE_COLUMNS), {"kept": True}


def _assemble_capture(frame: pd.DataFrame, metas: list[dict], sweep: dict):
    import torch

    from analysis.capture import Activations
    from analysis.models.sites import Site

    def parse(name: str) -> Site:
        kind, _, layer = name.partition(".")
        return Site(kind, int(layer) if layer else None)

    keys = list(dict.fromkeys(zip(frame["site"], frame["role"])))
    first = frame.drop_duplicates("sample", keep="first")
    meta = first[["sample", "question_type", "answer", "prediction", "prediction_id", "correct", "n_positions"]]
    features = {}
    for name, role in keys:
        part = frame[(frame["site"] == name) & (frame["role"] == role)]
        features[(parse(name), role)] = torch.from_numpy(np.stack(part["features"].to_numpy()).astype(np.float32))
    dropped = pd.DataFrame([{"sample": m["id"], "question_type": m.get("question_type"), "reason": m.get("reason")}
                            for m in metas if not m["kept"]], columns=["sample", "question_type", "reason"])
    return Activations(features, meta.reset_index(drop=True), dropped,
                       list(dict.fromkeys(parse(n) for n, _ in keys)), list(dict.fromkeys(r for _, r in keys)),
                       sweep["arguments"]["options"]["pool"])


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _probes() -> dict[str, Probe]:
    from analysis.probes.flow import DEFAULT_BLOCKS, KNOCKOUT_COLUMNS, REGION_COLUMNS

    return {
        "information_flow": Probe(
            "information_flow",
            {"blocks": list(DEFAULT_BLOCKS), "window": None, "only_correct": True, "batch_size": 16,
             "reuse_prefix": True},
            _run_flow, _assemble_flow, KNOCKOUT_COLUMNS, "attention knockout per edge set and layer window"),
        "logit_lens": Probe(
            "logit_lens", {"positions": ["last"], "final_norm": True, "only_correct": False},
            _run_lens, lambda frame, metas, sweep: frame, LENS_COLUMNS, "answer probability read from every layer"),
        "region_knockout": Probe(
            "region_knockout", {"seed": 0, "batch_size": 16},
            _run_region, _assemble_region, REGION_COLUMNS, "accuracy with the question's patches cut off"),
        "capture": Probe(
            "capture", {"layers": None, "roles": ["image", "question", "last"], "kinds": ["resid_post"],
                        "pool": "mean"},
            _run_capture, _assemble_capture, CAPTURE_COLUMNS, "pooled hidden states (alignment, shift)"),
    }


ALIASES = {"flow": "information_flow", "knockout": "information_flow", "lens": "logit_lens",
           "region": "region_knockout"}
PROBES: tuple[str, ...] = ("information_flow", "logit_lens", "region_knockout", "capture")


def probe_options(probe: str, options: dict | None = None) -> dict:
    """Return the full option set of ``probe``: its defaults updated with ``options`` (unknown keys raise)."""
    spec = _probe(probe)
    options = dict(options or {})
    unknown = set(options) - set(spec.options)
    if unknown:
        raise InputError(f"{spec.name} has no option(s) {sorted(unknown)}; its options: {sorted(spec.options)}")
    return {**spec.options, **options}


def _probe(name: str) -> Probe:
    probes = _probes()
    name = ALIASES.get(name, name)
    if name not in probes:
        raise InputError(f"unknown sweep probe {name!r}; use one of {', '.join(probes)}")
    return probes[name]


# --- distributed set-up ------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: bool = False
    owned: bool = False

    def close(self):
        """Leave the process group if this module created it."""
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False

    def broadcast(self, value):
        """Return rank 0's ``value`` on every rank."""
        if not self.group:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Return every rank's ``value`` (in rank order) on every rank."""
        if not self.group:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self):
        if self.group:
            import torch.distributed as dist

            dist.barrier()


def _init_distributed(timeout_s: float) -> _Dist:
    """Join the torch.distributed group that ``torchrun`` / ``accelerate launch`` describes (or none)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world_size <= 1:
        return _Dist()
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return _Dist(rank, world_size, local_rank, group=True, owned=owned)


# --- folder bookkeeping --------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_json(path: Path, value: dict) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"))


def _part_path(out: Path, index: int) -> Path:
    return out / PARTS_DIR / f"{index:08d}.parquet"


def _write_part(path: Path, frame: pd.DataFrame, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           _META_KEY: json.dumps(meta, default=str).encode()})
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _read_part(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # a damaged file (disk trouble): say which one to delete
        raise SweepFolderError(f"cannot read {str(path)!r} ({err}); delete it and run the same command again "
                               "to recompute that sample") from None
    return table.to_pandas(), json.loads(table.schema.metadata[_META_KEY])


def _check_folder(out: Path, record: dict) -> str | None:
    """Create ``out`` for ``record`` or check that it holds the same run; return an error message or None."""
    if out.exists() and not out.is_dir():
        return f"--out {str(out)!r} is a file; pass a folder (it is created if missing)"
    path = out / SWEEP_FILE
    if not path.is_file():
        if out.is_dir() and any(p.name != PARTS_DIR for p in out.iterdir()):
            return (f"--out {str(out)!r} already holds files but no {SWEEP_FILE}: it is not a sweep folder; "
                    "choose an empty or new folder")
        if any((out / PARTS_DIR).glob("*.parquet")):
            return f"{str(out / PARTS_DIR)!r} holds results but no {SWEEP_FILE}; choose an empty or new folder"
        return None  # written by _start_folder once the model has accepted the options
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return f"cannot read {str(path)!r} ({err}); choose a new folder"
    if found.get("arguments") != record["arguments"]:
        old, new = found.get("arguments") or {}, record["arguments"]
        diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
        lines = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        return (f"{str(out)!r} holds a sweep with other arguments ({lines}). Run the same command as before to "
                "resume it, or choose another --out folder for a new sweep")
    if found.get("world_size") != record["world_size"]:
        return (f"{str(out)!r} was started with {found.get('world_size')} process(es) and this run has "
                f"{record['world_size']}: each rank owns a fixed shard of the samples. Resume with the same number "
                f"of processes (e.g. torchrun --nproc_per_node {found.get('world_size')}), or choose another --out "
                "folder")
    return None


def _start_folder(out: Path, record: dict) -> None:
    """Write ``record`` as ``out``'s ``sweep.json`` unless it is there (a resume); make the parts folder."""
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    if not (out / SWEEP_FILE).is_file():
        _write_json(out / SWEEP_FILE, record)


def _check_model(out: Path, model: dict) -> str | None:
    """Record the loaded model in ``sweep.json`` on the first run; on a resume, check it is the same."""
    path = out / SWEEP_FILE
    record = json.loads(path.read_text())
    if record.get("model") is None:
        record["model"] = model
        _write_json(path, record)
        return None
    if record["model"] != model:
        changed = {k: (record["model"].get(k), v) for k, v in model.items() if record["model"].get(k) != v}
        return (f"the model differs from the one this sweep started with ({changed}); resume with the same model "
                "and dtype, or choose another --out folder")
    return None


# --- the run -------------------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    """What one call of ``run_sweep`` did.

    Attributes:
        out: the sweep folder.
        n_samples: samples in the sweep.
        computed: sample indices computed by this call (all ranks).
        reused: sample indices found finished on disk and not recomputed (all ranks).
        rank: this process's rank; world_size: the number of processes.
        merged: True when rank 0 wrote ``results.parquet``.
    """

    out: Path
    n_samples: int
    computed: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    merged: bool = False


def run_sweep(
    probe: str,
    model,
    samples: str,
    out: str | os.PathLike,
    options: dict | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    device_map=None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    progress: bool = True,
    timeout_s: float = 7 * 24 * 3600,
    stop_after: int | None = None,
    _kill: bool = False,
) -> SweepSummary:
    """Run (or resume) a sweep of ``probe`` over ``samples`` into ``out``; return what this call did.

    Under ``torchrun`` / ``accelerate launch`` every rank calls this with the same arguments.

    Args:
        probe: one of ``PROBES`` (or an alias: ``flow``, ``lens``, ``region``).
        model: anything ``load_vlm`` takes (its name is part of the sweep's identity), or a loaded
            ``VLM`` (its ``name`` is used).
        samples: a ``--samples`` spec (``shapes:N[@SEED]`` or a sample file; see ``load_samples``).
        out: the sweep folder.
        options: the probe's options (``probe_options``); they are part of the sweep's identity.
        device, dtype, device_map, max_memory, offload_folder: passed to ``load_vlm``. ``dtype`` is
            part of the identity; placement is not (a run may resume on other hardware).
        progress: one progress bar per rank.
        timeout_s: how long ranks wait for each other (torch.distributed timeout).
        stop_after: testing hook: interrupt (``KeyboardInterrupt``, as Ctrl-C) after computing that
            many samples; the command line's ``--stop-after`` kills the process (SIGKILL) instead.

    Raises:
        SweepFolderError: ``out`` holds a sweep with other arguments or another world size.
        SampleFileError: the sample file is missing or names missing images.
    """
    from tqdm.auto import tqdm

    spec = _probe(probe)
    options = probe_options(spec.name, options)
    out = Path(out).expanduser()
    sample_list, digest = load_samples(samples)
    dist = _init_distributed(timeout_s)
    try:
        model_name = model if isinstance(model, (str, os.PathLike)) else model.name
        record = {
            "format": FORMAT,
            "arguments": {"probe": spec.name, "model": str(model_name), "samples": str(samples),
                          "samples_digest": digest, "n_samples": len(sample_list), "dtype": str(dtype),
                          "options": options},
            "world_size": dist.world_size,
            "model": None,
        }
        error = _check_folder(out, record) if dist.rank == 0 else None
        error = dist.broadcast(error)
        if error:
            raise SweepFolderError(error)

        vlm = model if not isinstance(model, (str, os.PathLike)) else _load(
            model, device, dtype, device_map, max_memory, offload_folder, dist)
        model_info = {"name": vlm.name, "family": vlm.family, "config_hash": vlm.config_hash,
                      "dtype": str(vlm.dtype).removeprefix("torch."), "layers": vlm.n_layers}
        if spec.name == "information_flow":
            from analysis.probes.flow import BLOCKS, layer_windows

            unknown = [b for b in options["blocks"] if b not in BLOCKS]
            if unknown:
                raise InputError(f"unknown edge set(s) {unknown}; use some of {', '.join(BLOCKS)}")
            layer_windows(vlm.n_layers, _window(vlm, options))  # raises for a window the model cannot take
            model_info["window"] = _window(vlm, options)
        if spec.name == "capture":
            from analysis.capture import capture_sites

            layers = None if options["layers"] is None else [int(v) for v in options["layers"]]
            capture_sites(vlm, layers, options["kinds"])  # raises for sites this model cannot give
        # the folder is claimed only now: options the model refuses leave no sweep.json to block a corrected rerun
        if dist.rank == 0:
            _start_folder(out, record)
        error = _check_model(out, model_info) if dist.rank == 0 else None
        error = dist.broadcast(error)
        if error:
            raise SweepFolderError(error)

        mine = list(range(dist.rank, len(sample_list), dist.world_size))
        done = [i for i in mine if _part_path(out, i).is_file()]
        todo = [i for i in mine if i not in set(done)]
        started = time.time()
        bar = tqdm(total=len(mine), initial=len(done), desc=f"{spec.name} rank {dist.rank}/{dist.world_size}",
                   position=dist.rank, disable=not progress, dynamic_ncols=True)
        computed = []
        for index in todo:
            sample = sample_list[index]
            frame, meta = spec.run(vlm, sample, index, options)
            meta.update({"index": index, "id": sample.id, "question_type": sample.question_type})
            _write_part(_part_path(out, index), frame.reset_index(drop=True), meta)
            computed.append(index)
            bar.update(1)
            if stop_after is not None and len(computed) >= stop_after:
                bar.close()
                if _kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                raise KeyboardInterrupt(f"stop_after={stop_after}: stopped after {len(computed)} samples")
        bar.close()
        from analysis.plots.save import machine_info

        stats = {"rank": dist.rank, "host": socket.gethostname(), "device": str(vlm.device),
                 "machine": machine_info(vlm), "computed": computed, "reused": done,
                 "seconds": round(time.time() - started, 3)}
        everyone = dist.gather(stats)
        summary = SweepSummary(out, len(sample_list), sorted(i for s in everyone for i in s["computed"]),
                               sorted(i for s in everyone for i in s["reused"]), dist.rank, dist.world_size)
        if dist.rank == 0:
            _merge(out, spec, len(sample_list), everyone, options)
            summary.merged = True
        dist.barrier()
        return summary
    finally:
        dist.close()


def _load(model, device, dtype, device_map, max_memory, offload_folder, dist: _Dist):
    import torch

    from analysis.models.vlm import load_vlm

    if device == "auto" and device_map is None and dist.world_size > 1 and torch.cuda.is_available():
        device = f"cuda:{dist.local_rank % torch.cuda.device_count()}"
    kwargs = {}
    if device_map is not None:
        kwargs.update(device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
    return load_vlm(model, device=device, dtype=dtype, **kwargs)


def _merge(out: Path, spec: Probe, n: int, stats: list[dict], options: dict) -> None:
    """Concatenate the parts in sample order into ``results.parquet``; write ``provenance.json``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [i for i in range(n) if not _part_path(out, i).is_file()]
    if missing:
        raise SweepFolderError(f"{len(missing)} sample(s) have no result in {str(out / PARTS_DIR)!r} "
                               f"(e.g. index {missing[0]}); run the same command again to compute them")
    frames, metas = [], []
    for i in range(n):
        frame, meta = _read_part(_part_path(out, i))
        metas.append(meta)
        if len(frame):
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=spec.columns)
    record = json.loads((out / SWEEP_FILE).read_text())
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sidecar = {"sweep": record, "samples": metas}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           _META_KEY: json.dumps(sidecar, default=str).encode()})
    _atomic_write(out / RESULTS_FILE, lambda tmp: pq.write_table(table, tmp))

    from analysis.plots.save import git_info, package_versions

    path = out / PROVENANCE_FILE
    previous = json.loads(path.read_text()).get("attempts", []) if path.is_file() else []
    attempt = {"finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "ranks": [{**s, "computed": len(s["computed"]), "reused": len(s["reused"])} for s in stats]}
    _write_json(path, {
        "sweep": record, "n_samples": n, "n_kept": sum(bool(m.get("kept", True)) for m in metas),
        "rows": len(frame), "git": git_info(), "versions": package_versions(),
        "attempts": previous + [attempt],
    })


# --- reading a finished sweep ------------------------------------------------------------------------
def sweep_info(folder: str | os.PathLike) -> dict:
    """Return a finished sweep's record: ``{"sweep": sweep.json, "samples": [per-sample meta]}``."""
    import pyarrow.parquet as pq

    folder = Path(folder).expanduser()
    _require_results(folder)
    return json.loads(pq.read_schema(folder / RESULTS_FILE).metadata[_META_KEY])


def _require_results(folder: Path) -> None:
    if not (folder / SWEEP_FILE).is_file():
        raise SweepFolderError(f"{str(folder)!r} is not a sweep folder (no {SWEEP_FILE}); run "
                               "`python -m analysis sweep PROBE --model M --samples SPEC --out DIR` to make one")
    if not (folder / RESULTS_FILE).is_file():
        record = json.loads((folder / SWEEP_FILE).read_text())
        n = record["arguments"]["n_samples"]
        done = len(list((folder / PARTS_DIR).glob("*.parquet")))
        raise SweepFolderError(f"the sweep in {str(folder)!r} is unfinished ({done} of {n} samples); run the same "
                               "command again (it resumes) to finish and merge it")


def load_results(folder: str | os.PathLike, probe: str | None = None):
    """Return a finished sweep's result as its probe returns it.

    ``information_flow`` -> ``KnockoutResult``, ``region_knockout`` -> ``RegionKnockoutResult``,
    ``logit_lens`` -> DataFrame, ``capture`` -> ``Activations``.

    Args:
        folder: the sweep folder (``--out``).
        probe: if given, the probe the folder must hold (raises ``SweepFolderError`` otherwise).

    Raises:
        SweepFolderError: not a sweep folder, an unfinished sweep, or another probe.
    """
    folder = Path(folder).expanduser()
    info = sweep_info(folder)
    name = info["sweep"]["arguments"]["probe"]
    if probe is not None and _probe(probe).name != name:
        raise SweepFolderError(f"{str(folder)!r} holds a {name} sweep, not {_probe(probe).name}")
    frame = pd.read_parquet(folder / RESULTS_FILE)
    return _probe(name).assemble(frame, info["samples"], info["sweep"])


def results_for(results: str | os.PathLike | None, name: str, probe: str, model: str | None = None):
    """Return the sweep ``<results>/<name>`` for a notebook, or None to compute in the notebook instead.

    Args:
        results: the notebooks' ``results`` parameter: a folder of sweep folders (absolute, or
            relative to the notebook's folder), or None.
        name: the sub-folder (e.g. ``"knockout"``); when it does not exist, None (with a message).
        probe: the probe it must hold.
        model: when given and different from the sweep's model, a warning says which one is plotted.

    Raises:
        SweepFolderError: the sub-folder holds an unfinished sweep or another probe.
    """
    if results is None:
        return None
    folder = Path(results).expanduser() / name
    if not folder.exists():
        print(f"{name}: no sweep folder {str(folder)!r}; computing it here")
        return None
    result = load_results(folder, probe)
    swept = sweep_info(folder)["sweep"]["arguments"]
    if model is not None and swept["model"] != str(model):
        import warnings

        warnings.warn(f"plotting {name} from the sweep in {str(folder)!r}, computed on {swept['model']!r}, "
                      f"not on {model!r}", UserWarning, stacklevel=2)
    print(f"{name}: {swept['probe']} of {swept['model']} on {swept['samples']}, from {str(folder)!r}")
    return result


# --- command line -----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis sweep",
        description="Run a probe over many samples, sharded over processes (torchrun / accelerate launch) and "
                    "resumable: finished samples are kept in OUT and never recomputed.",
        epilog="examples:\n"
               "  python -m analysis sweep information_flow --model zoo:shapes-llava --samples shapes:1610 "
               "--out runs/flow --window 1\n"
               "  torchrun --nproc_per_node 4 -m analysis sweep logit_lens --model /data/llava-1.5-7b-hf "
               "--samples questions.jsonl --out runs/lens\n"
               "samples: shapes:N[@SEED] or a .jsonl/.json/.csv/.parquet file (image, question, answer, boxes, "
               "question_type, foil, id)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", help=f"one of {', '.join(PROBES)} (aliases: {', '.join(ALIASES)})")
    parser.add_argument("--model", required=True, help="hub id, folder, zoo:<name> or tiny:<family>")
    parser.add_argument("--samples", required=True, metavar="SPEC", help="shapes:N[@SEED] or a sample file")
    parser.add_argument("--out", required=True, metavar="DIR", help="the sweep folder (created; resumed if it exists)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default; cuda:LOCAL_RANK "
                                                         "under torchrun)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--device-map", help="accelerate device map: auto, balanced, sequential or a JSON object "
                                             "{module: device}")
    parser.add_argument("--max-memory", help='JSON, e.g. \'{"0": "20GiB", "cpu": "60GiB"}\' (with --device-map)')
    parser.add_argument("--offload-folder", help="folder for weights offloaded to disk (with --device-map)")
    group = parser.add_argument_group("probe options (each probe reads its own)")
    group.add_argument("--blocks", type=_csv, help="information_flow: edge sets, comma-separated")
    group.add_argument("--window", type=int, help="information_flow: layers blocked at once (default: the paper's 9 of 32 layers scaled to the model, at least 1)")
    group.add_argument("--all", action="store_true", help="information_flow / logit_lens: keep every sample, not "
                                                          "only correctly answered ones")
    group.add_argument("--only-correct", action="store_true", help="logit_lens: keep correctly answered samples")
    group.add_argument("--batch-size", type=int, help="knockout configurations per forward (default 16)")
    group.add_argument("--no-reuse-prefix", action="store_true", help="information_flow: no prefix cache reuse")
    group.add_argument("--positions", type=_csv, help="logit_lens: roles or positions (default last)")
    group.add_argument("--no-final-norm", action="store_true", help="logit_lens: unembed without the final norm")
    group.add_argument("--seed", type=int, help="region_knockout: seed of the random other patches (default 0)")
    group.add_argument("--layers", type=_csv, help="capture: decoder layers (default all)")
    group.add_argument("--roles", type=_csv, help="capture: roles (default image,question,last)")
    group.add_argument("--kinds", type=_csv, help="capture: site kinds (default resid_post)")
    group.add_argument("--pool", choices=["mean", "max"], help="capture: pooling (default mean)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--timeout", type=float, default=7 * 24 * 3600, metavar="S",
                        help="seconds ranks wait for each other (default a week)")
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # testing: SIGKILL after N samples
    return parser


def _options_from_args(probe: Probe, args: argparse.Namespace) -> dict:
    given = {"blocks": args.blocks, "window": args.window, "batch_size": args.batch_size,
             "positions": args.positions, "seed": args.seed, "layers": args.layers, "roles": args.roles,
             "kinds": args.kinds, "pool": args.pool}
    options = {k: v for k, v in given.items() if v is not None and k in probe.options}
    ignored = [k for k, v in given.items() if v is not None and k not in probe.options]
    if "only_correct" in probe.options:
        if probe.name == "information_flow":
            options["only_correct"] = not args.all
        else:
            options["only_correct"] = bool(args.only_correct) and not args.all
    if "reuse_prefix" in probe.options:
        options["reuse_prefix"] = not args.no_reuse_prefix
    if "final_norm" in probe.options:
        options["final_norm"] = not args.no_final_norm
    if ignored:
        raise InputError(f"{probe.name} takes no option(s) {', '.join('--' + k.replace('_', '-') for k in ignored)}")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m analysis sweep``; return the exit status (0 done, 2 bad arguments or folder)."""
    args = _parser().parse_args(argv)
    try:
        spec = _probe(args.probe)
        options = _options_from_args(spec, args)
        device_map = args.device_map
        if device_map and device_map.strip().startswith("{"):
            device_map = json.loads(device_map)
        max_memory = json.loads(args.max_memory) if args.max_memory else None
        if isinstance(max_memory, dict):
            max_memory = {int(k) if str(k).isdigit() else k: v for k, v in max_memory.items()}
        summary = run_sweep(spec.name, args.model, args.samples, args.out, options, device=args.device,
                            dtype=args.dtype, device_map=device_map, max_memory=max_memory,
                            offload_folder=args.offload_folder, progress=not args.no_progress,
                            timeout_s=args.timeout, stop_after=args.stop_after, _kill=True)
    except (VLMProbesError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary.rank == 0:
        print(f"{spec.name}: {summary.n_samples} samples in {summary.out} ({len(summary.computed)} computed, "
              f"{len(summary.reused)} already done) on {summary.world_size} process(es); "
              f"results in {summary.out / RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
