"""On-disk cache of captured activations: one safetensors file + one JSON per sample and request.

An entry's key is the SHA-256 of its *key fields*: everything that determines the captured tensors
(model name, config hash, a fingerprint of the weights, dtype, device type, processor and
tokenizer settings, image pixels, question, template, teacher-forced answer or generation
settings, sites, roles, pooling). The JSON beside the tensors stores the key fields themselves,
and an entry is served only when they equal the requested ones, so a hash collision or a
hand-edited file can never serve the wrong tensors.

Writes are atomic: the tensors go to a temporary file that is renamed into place, then the JSON
(which records the tensors' SHA-256) the same way. A write killed at any point leaves either
nothing, an orphan temporary file, or tensors without a JSON; a JSON whose tensors are missing,
truncated or different from its checksum is a miss and is overwritten by the recomputed entry.
Since entries are per sample and stored as each batch finishes, an interrupted run resumes where
it stopped.

Layout: ``<root>/<key[:2]>/<key>.safetensors`` and ``<key>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.errors import InputError
from analysis.models.digests import processor_digest

FORMAT = 1
"""Version of the entry layout; part of every key, so a format change invalidates old entries."""


class ActivationCache:
    """A folder of cached per-sample activations (see the module docstring).

    Attributes:
        root: the cache folder (created on first write); an existing file there raises ``InputError``.
        hits, misses, corrupt: counters since creation (``corrupt`` counts entries found damaged).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(
                f"the activation cache needs a folder, but {str(self.root)!r} is a file; "
                "pass a folder path (it is created if missing)"
            )
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def __repr__(self) -> str:
        return f"ActivationCache({str(self.root)!r}, hits={self.hits}, misses={self.misses}, corrupt={self.corrupt})"

    @staticmethod
    def key(fields: dict) -> str:
        """Return the hex SHA-256 of ``fields`` (canonical JSON) plus the format version."""
        blob = json.dumps({"format": FORMAT, **fields}, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def paths(self, fields: dict) -> tuple[Path, Path]:
        """Return the ``(tensors, json)`` paths of the entry for ``fields``."""
        key = self.key(fields)
        folder = self.root / key[:2]
        return folder / f"{key}.safetensors", folder / f"{key}.json"

    def load(self, fields: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Return ``(tensors, meta)`` stored for ``fields``, or None if absent, damaged or different."""
        tensor_path, json_path = self.paths(fields)
        if not json_path.is_file():
            self.misses += 1
            return None
        try:
            record = json.loads(json_path.read_text())
            expected = json.loads(json.dumps({"format": FORMAT, **fields}, sort_keys=True, default=str))
            if record.get("fields") != expected:
                self.misses += 1
                return None
            data = tensor_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError("checksum mismatch")
            tensors = load_file(tensor_path)
            if sorted(tensors) != sorted(record["tensors"]):
                raise ValueError("tensor names differ from the record")
        except (OSError, ValueError, KeyError, TypeError, SafetensorError):
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return tensors, record["meta"]

    def store(self, fields: dict, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Write an entry atomically (tensors first, then the JSON that validates them)."""
        tensor_path, json_path = self.paths(fields)
        tensor_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        tmp = _temp_path(tensor_path)
        try:
            save_file(tensors, str(tmp))
            _fsync(tmp)
            data = tmp.read_bytes()
            os.replace(tmp, tensor_path)
        finally:
            tmp.unlink(missing_ok=True)
        record = {"fields": {"format": FORMAT, **fields}, "sha256": hashlib.sha256(data).hexdigest(),
                  "tensors": sorted(tensors), "meta": meta}
        _atomic_write_text(json_path, json.dumps(record, sort_keys=True, indent=1, default=str))

    def clean(self) -> int:
        """Delete temporary files left by killed writes; return how many were removed."""
        removed = 0
        for path in self.root.glob("*/.*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


def _temp_path(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _temp_path(path)
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def weights_fingerprint(model: torch.nn.Module, values_per_tensor: int = 64) -> str:
    """Return a SHA-256 over every parameter's name, shape, dtype and evenly spaced values.

    Cheap on any device (a few values per tensor), yet different for two trainings of the same
    architecture, or a checkpoint overwritten in place.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            picks = torch.linspace(0, flat.numel() - 1, min(values_per_tensor, flat.numel()), device=flat.device)
            values = flat[picks.long()].to("cpu", torch.float64)
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def model_fields(vlm) -> dict:
    """Return the key fields that describe the model side of a capture."""
    return {
        "model": vlm.name,
        "family": vlm.family,
        "config_hash": vlm.config_hash,
        "weights": weights_fingerprint(vlm.model),
        "dtype": str(vlm.dtype),
        "device": vlm.device.type,
        "processor": processor_digest(vlm.processor),
    }
