"""Shared fixtures: tiny random VLMs of every family, built once per test session.

Which families a test runs on (the split that keeps the suite fast):

* the ``family`` parameter: ``CORE_FAMILIES`` (``analysis.testing``), the seven families every
  per-family test of the suite is parametrised over (each probe, its edge cases, numerics, real
  tokenizers, full-width architectures);
* ``tests/test_families_conformance.py``: every fully supported family (``SUPPORTED_FAMILIES``)
  and every token-level family with a tiny model (``TOKEN_LEVEL_FAMILIES`` there: the generic
  path), each once: the exactness checks, the whole probe battery, and a ``save_pretrained`` ->
  ``load_vlm(folder)`` round trip. A new family joins there, not in the per-probe tests.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests run tiny models: one torch thread per process is as fast, and far faster when other jobs share the
# cores (./run_all.sh --test runs one pytest-xdist worker per core). OMP_NUM_THREADS reaches the notebook kernels
# and subprocesses the tests start.
# torch and the package are imported by the tests, not here: under pytest-xdist the controller process loads
# this file too but runs no test (importing them there cost every run ~10 s of start-up).
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    torch.set_num_threads(1)


@functools.cache
def _tiny(family: str):
    from analysis.testing import tiny_vlm

    return tiny_vlm(family, seed=0)


_SHARED: list[Path] = []  # the folder all pytest-xdist workers of this run share (set by shared_folder)


@pytest.fixture(scope="session", autouse=True)
def shared_folder(tmp_path_factory, worker_id):
    """Under pytest-xdist, the run's temporary folder that every worker sees (its workers' parent)."""
    if worker_id != "master":
        _SHARED.append(tmp_path_factory.getbasetemp().parent)


@functools.cache
def conformance_of(family: str):
    """``analysis.conformance`` of the session's tiny ``family`` model on the ``photo`` image and
    ``QUESTION``, computed once per test run (the families table and the exactness tests share it).

    Under pytest-xdist the first worker to ask computes it, under a file lock, and leaves it as JSON
    in the run's shared folder for the other workers (the families table asks for all 50 families).
    """
    from filelock import FileLock

    from analysis.conformance import Conformance, conformance

    def compute() -> Conformance:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
        return conformance(_tiny(family), image, QUESTION)

    if not _SHARED:
        return compute()
    path = _SHARED[0] / f"conformance-{family}.json"
    with FileLock(f"{path}.lock"):
        if path.is_file():
            return Conformance(**json.loads(path.read_text()))
        result = compute()
        path.write_text(json.dumps(dataclasses.asdict(result)))
        return result


def pytest_generate_tests(metafunc):
    """A test taking ``family`` runs on each core family name (``analysis.testing.CORE_FAMILIES``; every
    supported family is in test_families_conformance), unless it parametrizes ``family`` itself."""
    if "family" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers(name="parametrize"):
        names = marker.args[0]
        if "family" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    from analysis.testing import CORE_FAMILIES

    metafunc.parametrize("family", CORE_FAMILIES)


@pytest.fixture
def tiny():
    """``tiny(family)`` -> the session's shared tiny VLM of that family (do not modify it)."""
    return _tiny


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A 200 x 150 (landscape) RGB test image with structure in it."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))


QUESTION = "what color is the circle ?"


def assert_detectable(effects, tol: float, factor: float = 100.0, what: str = "effect") -> None:
    """Assert that every one of ``effects`` is at least ``factor`` x ``tol``.

    An exactness test compares a probe with a reference to ``tol``; it can only catch a probe
    that does nothing (or the wrong thing) if the effect it measures is far larger than ``tol``.
    """
    import torch

    values = [float(e.detach()) if torch.is_tensor(e) else float(e) for e in
              (effects.flatten() if torch.is_tensor(effects) else effects)]
    smallest = min(abs(v) for v in values)
    assert smallest >= factor * tol, (
        f"the smallest {what} checked ({smallest:.3g}) is not {factor:g}x the tolerance ({tol:g}): "
        "the test could not tell a broken probe from a working one"
    )
