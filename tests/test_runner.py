"""The notebook runner behind ``python -m analysis`` / ``./run_all.sh``."""

from __future__ import annotations

import json
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from pathlib import Path

from analysis.runner import (Result, find_notebooks, last_duration, load_params, main, notebook_params,
                             record_durations, summary_table)

ROOT = Path(__file__).resolve().parents[1]


def _write(path, parameters: str, *body: str):
    cell = new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[cell, *map(new_code_cell, body)],
                      metadata={"kernelspec": {"name": "vlm-probes", "display_name": "Python (vlm-probes)", "language": "python"}})
    nbformat.write(nb, path)
    return path


def test_find_notebooks_sorts_and_selects(tmp_path):
    for name in ("01_b.ipynb", "00_a.ipynb", "scratch.ipynb", "10_c.ipynb"):
        _write(tmp_path / name, "x = 1")
    assert [p.stem for p in find_notebooks(tmp_path)] == ["00_a", "01_b", "10_c"]
    assert [p.stem for p in find_notebooks(tmp_path, ["10_c.ipynb", "00"])] == ["00_a", "10_c"]
    with pytest.raises(ValueError, match="no notebook named 02"):
        find_notebooks(tmp_path, ["02"])


def test_params_overrides_sections_and_declared_names(tmp_path):
    (tmp_path / "p.yaml").write_text("model: a\nseed: 0\nextra: 1\nnotebooks:\n  00_a:\n    seed: 5\n    model: b\n")
    nb = _write(tmp_path / "00_a.ipynb", "model = 'm'\nseed = 1\nfigures_dir = 'f'")
    other = _write(tmp_path / "01_b.ipynb", "model = 'm'\nseed = 1")
    params = load_params(tmp_path / "p.yaml")
    assert notebook_params(nb, params) == {"model": "b", "seed": 5}
    assert notebook_params(other, params) == {"model": "a", "seed": 0}
    params = load_params(tmp_path / "p.yaml", {"model": "c"})
    assert notebook_params(nb, params) == {"model": "c", "seed": 5}
    assert notebook_params(other, params) == {"model": "c", "seed": 0}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_params(tmp_path / "bad.yaml")


def test_summary_table_lists_every_notebook():
    table = summary_table([Result("00_a", True, 1.25, []), Result("01_b", False, 0.5, [], "In [3]: ValueError: boom")])
    header, rule, ok, failed = table.splitlines()
    assert header.split() == ["notebook", "status", "seconds", "figures", "error"]
    assert ok.split() == ["00_a", "ok", "1.2", "0"] and set(rule) == {"-"}
    assert failed.split()[:4] == ["01_b", "FAILED", "0.5", "0"] and failed.endswith("In [3]: ValueError: boom")


def test_a_failing_notebook_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    from analysis import kernel_fork

    monkeypatch.setattr(kernel_fork, "PRELOAD", ("colorsys",))  # these kernels never import torch
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write(notebooks / "00_fails.ipynb", "model = 'm'", "raise FileNotFoundError(f'no model at {model}')")
    # Writes a figure and its sidecar by hand: importing analysis in the kernel would cost seconds.
    _write(notebooks / "01_draws.ipynb", "model = 'm'\nseed = 0\nfigures_dir = 'figures'",
           "import json, pathlib\nout = pathlib.Path(figures_dir, '01_draws'); out.mkdir(parents=True)\n"
           "(out / 'line.png').write_bytes(b'png'); (out / 'line.json').write_text(json.dumps({'model': model}))")
    (tmp_path / "p.yaml").write_text("model: tiny:llava\nseed: 1\n")
    status = main(["--notebooks", str(notebooks), "--params", str(tmp_path / "p.yaml"), "-p", "model", "/no/such/model",
                   "--executed", str(tmp_path / "executed"), "--figures", str(tmp_path / "figures")])
    out = capsys.readouterr()
    assert status == 1
    rows = {line.split()[0]: line for line in out.out.splitlines() if line.startswith(("00_fails ", "01_draws "))}
    assert "FAILED" in rows["00_fails"] and "FileNotFoundError: no model at /no/such/model" in rows["00_fails"]
    assert rows["01_draws"].split()[1:4:2] == ["ok", "1"]
    assert "raise FileNotFoundError" in out.err  # the failing cell is shown
    assert (tmp_path / "figures" / "01_draws" / "line.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "executed").iterdir()) == ["00_fails.ipynb", "01_draws.ipynb"]
    # Only the notebook that ran through records its duration (the next run's order).
    seconds = float(rows["01_draws"].split()[2])
    assert last_duration(notebooks / "01_draws.ipynb", tmp_path / "none", tmp_path / "figures") == pytest.approx(seconds, abs=0.05)
    assert last_duration(notebooks / "00_fails.ipynb", tmp_path / "none", tmp_path / "figures") == float("inf")


def test_durations_order_a_fresh_clone_and_an_executed_copy_wins(tmp_path):
    """Without an executed copy (a fresh clone) the committed figures/durations.json orders the notebooks."""
    notebook = _write(tmp_path / "05_slow.ipynb", "model = 'm'")
    figures, executed = tmp_path / "figures", tmp_path / "executed"
    assert last_duration(notebook, executed, figures) == float("inf")  # never run anywhere: first of all
    record_durations([Result("05_slow", True, 268.34), Result("00_fast", True, 17.0)], figures)
    record_durations([Result("00_fast", True, 12.0), Result("05_slow", False, 3.0)], figures)  # a failure keeps 268.3
    assert last_duration(notebook, executed, figures) == 268.3
    assert last_duration(tmp_path / "00_fast.ipynb", executed, figures) == 12.0
    executed.mkdir()
    copy = nbformat.read(notebook, as_version=4)
    copy.metadata["papermill"] = {"duration": 99.0}
    nbformat.write(copy, executed / notebook.name)
    assert last_duration(notebook, executed, figures) == 99.0


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["--notebooks", str(tmp_path), "--params", str(tmp_path / "none.yaml")]) == 2
    assert "error:" in capsys.readouterr().err


def test_every_parameter_a_params_file_sets_is_declared_by_its_notebook():
    """A parameter the runner cannot see is silently not set (papermill's own parser dropped
    02's ``n_per_type``, whose comment has parentheses): every section key must be declared."""
    from analysis.runner import declared_parameters

    for path in sorted((ROOT / "notebooks" / "params").glob("*.yaml")):
        for name, section in load_params(path).get("notebooks", {}).items():
            declared = declared_parameters(ROOT / "notebooks" / f"{name}.ipynb")
            assert set(section) <= declared, (path.name, name, set(section) - declared)


# --- forked kernels (analysis.kernel_fork) -------------------------------------------------------
_ENV_CELL = ("import json, os, sys, random, pathlib, numpy\n"
             "seen = {'preloaded': 'colorsys' in sys.modules, 'cwd': os.getcwd(), 'path0': sys.path[0],\n"
             "        'threads': os.environ.get('OMP_NUM_THREADS'), 'parent': os.environ.get('JPY_PARENT_PID'),\n"
             "        'own_group': os.getpgid(0) == os.getpid(), 'random': [random.random(), numpy.random.random()],\n"
             "        'pid': os.getpid()}\n"
             "out = pathlib.Path(figures_dir, '{name}'); out.mkdir(parents=True)\n"
             "(out / 'env.png').write_bytes(b'png'); (out / 'env.json').write_text(json.dumps(seen))")


def test_forked_kernels_start_like_fresh_ones(tmp_path, monkeypatch, capsys):
    """Forked from a server that preloaded a module (colorsys here; torch, transformers and analysis in
    ./run_all.sh), each notebook's kernel is its own process that sees what a kernel started from scratch
    sees: the notebook's folder, OMP_NUM_THREADS, sys.path, jupyter_client's parent pid, its own process
    group (interrupts reach it), Python's and NumPy's generators seeded afresh; a kernel that dies is reported."""
    import os

    from analysis import kernel_fork

    monkeypatch.setattr(kernel_fork, "PRELOAD", ("colorsys", "numpy.random"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("00_a", "01_b"):
        _write(notebooks / f"{name}.ipynb", "model = 'm'\nfigures_dir = 'figures'", _ENV_CELL.replace("{name}", name))
    _write(notebooks / "02_dies.ipynb", "model = 'm'", "import os\nos._exit(3)")
    (tmp_path / "p.yaml").write_text("model: tiny:llava\ndevice: cpu\n")
    seen = {}
    for how in ("forked", "fresh"):
        figures = tmp_path / how
        status = main(["--notebooks", str(notebooks), "--params", str(tmp_path / "p.yaml"), "--jobs", "2",
                       "--executed", str(tmp_path / f"executed-{how}"), "--figures", str(figures)]
                      + (["--fresh-kernels"] if how == "fresh" else []))
        out = capsys.readouterr().out
        assert status == 1 and f"{how} kernels" in out
        dead = next(line for line in out.splitlines() if line.startswith("02_dies "))
        assert "FAILED" in dead and "DeadKernelError" in dead  # reported; the others ran
        seen[how] = [json.loads((figures / name / "env.json").read_text()) for name in ("00_a", "01_b")]
    forked, fresh = seen["forked"], seen["fresh"]
    assert [s.pop("preloaded") for s in forked] == [True, True] and [s.pop("preloaded") for s in fresh] == [False] * 2
    python, numpy = zip(forked[0]["random"], forked[1]["random"])
    assert python[0] != python[1] and numpy[0] != numpy[1] and forked[0]["pid"] != forked[1]["pid"]
    for s in forked + fresh:
        for key in ("random", "pid"):
            s.pop(key)
    assert forked == fresh  # cwd, sys.path[0], threads, parent pid, own process group
    assert {k: v for k, v in forked[0].items() if k != "path0"} == {
        "cwd": str(notebooks.resolve()), "threads": str(max(1, (os.cpu_count() or 1) // 2)), "parent": str(os.getpid()),
        "own_group": True}


def test_kernel_server_interrupts_and_kills_what_is_left():
    """An interrupt reaches a forked kernel's running cell; leaving the block kills and reaps every kernel."""
    import os

    from jupyter_client.utils import run_sync

    from analysis.kernel_fork import forked_kernels
    from analysis.runner import KERNEL

    with forked_kernels(KERNEL, preload=("colorsys",)) as manager:
        assert manager is not None
        km = manager(kernel_name=KERNEL)
        run_sync(km.start_kernel)()
        client = km.blocking_client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        msg_id = client.execute("import time\ntime.sleep(60)")
        time.sleep(1)
        run_sync(km.interrupt_kernel)()
        reply = client.get_shell_msg(timeout=20)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["ename"] == "KeyboardInterrupt"
        pid = km.provisioner.pid
        os.kill(pid, 0)  # still running after the interrupt
        client.stop_channels()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
