"""Digests of what a model's inputs and outputs depend on: its config, its processor, an image.

``config_digest``: a model config's digest that stays the same across transformers versions. A
hash of ``config.to_dict()`` changes whenever transformers adds a field (5.23 -> 5.24 did),
although the model computes the same thing. The digest here covers only what the checkpoint
chose: the fields whose values differ from the config class's defaults, for the config and each
of its sub-configs (text, vision, ...), without the writing version.
"""

from __future__ import annotations

import hashlib
import json

from PIL import Image
from transformers import PretrainedConfig

# Fields that say who wrote the config, not what the model computes.
_VOLATILE = frozenset({"transformers_version", "_name_or_path", "_commit_hash"})


def essential_fields(config: PretrainedConfig) -> dict:
    """Return the fields of ``config`` that differ from its class's defaults (sub-configs likewise)."""
    defaults = type(config)().to_dict()
    fields = {}
    for key, value in config.to_dict().items():
        sub = vars(config).get(key)  # not getattr: heterogeneous configs (Gemma 4) refuse global per-layer reads
        if isinstance(sub, PretrainedConfig):
            fields[key] = essential_fields(sub)
        elif key not in _VOLATILE and (key not in defaults or defaults[key] != value):
            fields[key] = value
    return fields


def config_digest(config: PretrainedConfig, length: int = 16) -> str:
    """Return the first ``length`` hex digits of the SHA-256 of ``essential_fields(config)``."""
    blob = json.dumps(essential_fields(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def image_digest(image: Image.Image) -> str:
    """Return the SHA-256 of an RGB image's size and pixel bytes."""
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def processor_digest(processor) -> str:
    """Return the SHA-256 of a processor's settings and its tokenizer (vocabulary, template)."""
    digest = hashlib.sha256(processor.to_json_string().encode())
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    digest.update(vocabulary.encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return digest.hexdigest()
