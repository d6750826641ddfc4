"""Sharded, resumable sweeps (analysis.sweep): torchrun == one process, kill and resume, bad folders."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis import load_vlm
from analysis.capture import capture
from analysis.data.shapes import make_samples
from analysis.errors import VLMProbesError
from analysis.probes import information_flow, logit_lens, region_knockout
from analysis.sweep import (
    PARTS_DIR,
    RESULTS_FILE,
    SWEEP_FILE,
    SampleFileError,
    SweepFolderError,
    _sample_seed,
    load_results,
    main,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "zoo:shapes-llava"
N = 40  # the acceptance size: 40 zoo questions
FLOW = {"window": 1}


@functools.cache
def _zoo():
    return load_vlm(MODEL, device="cpu")


def _cli(*args: str, nproc: int | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m analysis sweep ...`` (under ``torchrun --standalone`` with ``nproc``) in a subprocess."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc \
        else [sys.executable]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "analysis", "sweep", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _flow_args(out: Path) -> list[str]:
    return ["information_flow", "--model", MODEL, "--samples", f"shapes:{N}", "--out", str(out), "--window", "1",
            "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def direct():
    """The information-flow probe called directly on the 40 questions: what every sweep must equal, bit for bit."""
    return information_flow(_zoo(), make_samples(N, seed=0), window=1, progress=False)


def test_torchrun_two_processes_equal_the_direct_call(tmp_path, direct):
    done = _cli(*_flow_args(tmp_path / "two"), nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    # every value, bit for bit (the one-process sweep is checked the same way below)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two" / RESULTS_FILE), direct.frame, check_exact=True)
    result = load_results(tmp_path / "two", "information_flow")
    assert (result.n_samples, result.n_correct, result.window) == (direct.n_samples, direct.n_correct, 1)
    assert result.skipped == direct.skipped
    provenance = json.loads((tmp_path / "two" / "provenance.json").read_text())
    ranks = provenance["attempts"][-1]["ranks"]
    assert [(r["rank"], r["computed"], r["reused"]) for r in ranks] == [(0, N // 2, 0), (1, N // 2, 0)]
    assert provenance["sweep"]["world_size"] == 2 and provenance["git"]["commit"]
    assert [r["machine"]["torch_cpu_capability"] for r in ranks] == [torch.backends.cpu.get_cpu_capability()] * 2


def test_killed_run_resumes_without_recomputing(tmp_path, direct):
    out = tmp_path / "flow"
    killed = _cli(*_flow_args(out), "--stop-after", "15")  # the process SIGKILLs itself after 15 samples
    assert killed.returncode == -9, killed.stderr[-3000:]
    finished = sorted(out.glob(f"{PARTS_DIR}/*.parquet"))
    assert len(finished) == 15 and not (out / RESULTS_FILE).exists()
    with pytest.raises(SweepFolderError, match="unfinished .15 of 40 samples"):
        load_results(out)
    (out / PARTS_DIR / ".00000020.parquet.x.tmp").write_bytes(b"half a file")  # a write killed midway
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}

    resumed = run_sweep("information_flow", _zoo(), f"shapes:{N}", out, FLOW, progress=False)
    assert resumed.reused == list(range(15)) and resumed.computed == list(range(15, N))  # none recomputed
    assert resumed.world_size == 1 and resumed.merged
    assert {p.name: p.stat().st_mtime_ns for p in finished} == stamps  # finished parts untouched
    again = run_sweep("information_flow", _zoo(), f"shapes:{N}", out, FLOW, progress=False)
    assert again.computed == [] and again.reused == list(range(N))

    # one process, resumed: the direct call's values, bit for bit
    pd.testing.assert_frame_equal(pd.read_parquet(out / RESULTS_FILE), direct.frame, check_exact=True)
    attempts = json.loads((out / "provenance.json").read_text())["attempts"]
    assert [(a["ranks"][0]["computed"], a["ranks"][0]["reused"]) for a in attempts] == [(25, 15), (0, 40)]


def test_interrupted_in_process_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_sweep("logit_lens", _zoo(), "shapes:6", tmp_path, stop_after=4, progress=False)
    resumed = run_sweep("logit_lens", _zoo(), "shapes:6", tmp_path, progress=False)
    assert resumed.computed == [4, 5] and resumed.reused == [0, 1, 2, 3]


def test_bad_inputs_get_clear_errors(tmp_path, capsys):
    out = tmp_path / "lens"
    run_sweep("logit_lens", _zoo(), "shapes:3", out, progress=False)
    with pytest.raises(SweepFolderError, match=r"other arguments \(n_samples: 3 there, 4 now; samples: "):
        run_sweep("logit_lens", _zoo(), "shapes:4", out, progress=False)
    with pytest.raises(SweepFolderError, match="other arguments .*probe: 'logit_lens' there, 'region_knockout' now"):
        run_sweep("region_knockout", _zoo(), "shapes:3", out, progress=False)
    with pytest.raises(SweepFolderError, match=r"final_norm"):
        run_sweep("logit_lens", _zoo(), "shapes:3", out, {"final_norm": False}, progress=False)
    record = json.loads((out / SWEEP_FILE).read_text())
    (out / SWEEP_FILE).write_text(json.dumps({**record, "world_size": 2}))  # as if started by torchrun with 2
    with pytest.raises(SweepFolderError, match="started with 2 process.*this run has 1.*nproc_per_node 2"):
        run_sweep("logit_lens", _zoo(), "shapes:3", out, progress=False)
    with pytest.raises(SampleFileError, match="does not exist"):
        run_sweep("logit_lens", _zoo(), str(tmp_path / "nowhere.jsonl"), tmp_path / "x", progress=False)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "gone.png", "question": "what ?"}) + "\n")
    with pytest.raises(SampleFileError, match="1 image.*do not exist.*gone.png"):
        run_sweep("logit_lens", _zoo(), str(tmp_path / "bad.jsonl"), tmp_path / "y", progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(SweepFolderError, match="is a file"):
        run_sweep("logit_lens", _zoo(), "shapes:3", tmp_path / "file", progress=False)
    with pytest.raises(VLMProbesError, match="unknown sweep probe"):
        run_sweep("attention", _zoo(), "shapes:3", tmp_path / "z", progress=False)
    # the command line prints the message and exits with 2 (no traceback)
    assert main(["logit_lens", "--model", MODEL, "--samples", str(tmp_path / "nowhere.jsonl"), "--out",
                 str(tmp_path / "w"), "--device", "cpu"]) == 2
    assert "error: sample file" in capsys.readouterr().err
    assert main(["logit_lens", "--model", MODEL, "--samples", "shapes:3", "--out", str(tmp_path / "w"),
                 "--window", "2"]) == 2
    assert "logit_lens takes no option(s) --window" in capsys.readouterr().err


def test_sample_file_and_other_probes_equal_direct_calls(tmp_path):
    vlm = _zoo()
    samples = make_samples(8, seed=3)
    records = []
    for i, s in enumerate(samples):
        s.image.save(tmp_path / f"{i}.png")
        records.append({"image": f"{i}.png", "question": s.question, "answer": s.answer,
                        "boxes": [list(b) for b in s.object_boxes], "question_type": s.question_type,
                        "id": f"q{i}"})
    spec = tmp_path / "questions.jsonl"
    spec.write_text("".join(json.dumps(r) + "\n" for r in records))
    direct_samples = [{**r, "image": s.image} for r, s in zip(records, samples)]

    lens = load_results(run_sweep("logit_lens", vlm, str(spec), tmp_path / "lens", progress=False).out)
    pd.testing.assert_frame_equal(lens, logit_lens(vlm, direct_samples, progress=False), check_exact=True)

    region = load_results(run_sweep("region_knockout", vlm, str(spec), tmp_path / "region", progress=False).out)
    for i, row in region.frame.reset_index(drop=True).iterrows():
        index = int(row["sample"][1:])
        one = region_knockout(vlm, [direct_samples[index]], seed=_sample_seed(0, index), progress=False).frame
        assert row.to_dict() == one.iloc[0].to_dict()
    assert len(region.frame) + len(region.skipped) == len(samples)

    acts = load_results(run_sweep("capture", vlm, str(spec), tmp_path / "capture", {"layers": ["0", "3"]},
                                  progress=False).out, "capture")
    reference = capture(vlm, direct_samples, layers=[0, 3], batch_size=1, progress=False)
    assert acts.ids == reference.ids and set(acts.features) == set(reference.features)
    for key, value in reference.features.items():
        assert torch.equal(acts.features[key], value)
    assert acts.meta["correct"].tolist() == reference.meta["correct"].tolist()
    with pytest.raises(SweepFolderError, match="holds a capture sweep, not logit_lens"):
        load_results(tmp_path / "capture", "logit_lens")


def test_notebooks_read_sweep_folders(tmp_path, capsys):
    from analysis.sweep import results_for

    run_sweep("logit_lens", _zoo(), "shapes:2", tmp_path / "logit_lens", progress=False)
    assert results_for(None, "logit_lens", "logit_lens") is None  # no results: the notebook computes
    assert results_for(tmp_path, "knockout", "information_flow") is None  # no such sweep: computed too
    assert "no sweep folder" in capsys.readouterr().out
    frame = results_for(tmp_path, "logit_lens", "logit_lens", MODEL)
    pd.testing.assert_frame_equal(frame, load_results(tmp_path / "logit_lens"))
    with pytest.warns(UserWarning, match="computed on 'zoo:shapes-llava', not on 'zoo:other'"):
        results_for(tmp_path, "logit_lens", "logit_lens", "zoo:other")
    with pytest.raises(SweepFolderError, match="holds a logit_lens sweep, not region_knockout"):
        results_for(tmp_path, "logit_lens", "region_knockout")
    with pytest.raises(KeyboardInterrupt):
        run_sweep("logit_lens", _zoo(), "shapes:3", tmp_path / "unfinished", stop_after=1, progress=False)
    with pytest.raises(SweepFolderError, match="unfinished .1 of 3 samples.*run the same command again"):
        results_for(tmp_path, "unfinished", "logit_lens")


def test_options_the_model_refuses_leave_the_folder_free(tmp_path):
    """A window the model cannot take, or sites it cannot give, fail before the folder is claimed:
    no sweep.json is left behind, and the corrected command runs in the same folder."""
    from analysis.errors import InputError, UnsupportedModelError
    from analysis.testing import tiny_vlm

    out = tmp_path / "flow"
    vlm = _zoo()
    with pytest.raises(InputError, match="window"):
        run_sweep("information_flow", vlm, "shapes:2", out, {"window": vlm.n_layers + 1}, progress=False)
    assert not (out / SWEEP_FILE).exists()
    assert run_sweep("information_flow", vlm, "shapes:2", out, {"window": 1}, progress=False).computed == [0, 1]

    gemma4 = tiny_vlm("gemma4")  # its stream is not a sum of the blocks' writes: no attn_out / mlp_out
    with pytest.raises(UnsupportedModelError, match="resid_pre"):
        run_sweep("capture", gemma4, "shapes:1", tmp_path / "acts", {"kinds": ["attn_out"]}, progress=False)
    assert not (tmp_path / "acts" / SWEEP_FILE).exists()
    run_sweep("capture", gemma4, "shapes:1", tmp_path / "acts", {"kinds": ["resid_post"]}, progress=False)
    assert json.loads((tmp_path / "acts" / SWEEP_FILE).read_text())["arguments"]["options"]["kinds"] == ["resid_post"]
