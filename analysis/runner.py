"""Execute the notebooks headlessly with papermill and report what each one did.

``python -m analysis`` (what ``./run_all.sh`` runs) executes every ``notebooks/NN_name.ipynb``
in order on the registered Jupyter kernel ``vlm-probes``, with the working directory set to
the notebooks folder (as in JupyterLab), parameters from a YAML file, executed copies in
``notebooks/executed/`` and figures in ``figures/<notebook>/``. A failing notebook is
reported and the others still run; the run ends with a summary table and exit status 1 if
any notebook failed.

Parameter files (``notebooks/params/*.yaml``) map parameter names to values for every
notebook, plus an optional ``notebooks:`` mapping of per-notebook values::

    model: zoo:shapes-llava
    seed: 0
    notebooks:
      02_information_flow:
        samples: 16

Each notebook receives only the parameters its ``parameters`` cell declares. Command-line
overrides (``-p KEY VALUE``, ``--model``, ``--device``) beat both levels.

Notebooks are independent (each writes its own ``figures/<notebook>/``), so on a CPU-only run
several execute at once (``--jobs``; default: one per CPU core, at most one per notebook): each
kernel then gets ``cores // jobs`` threads (``OMP_NUM_THREADS``, unless already set), and the
longest notebooks start first (by the duration papermill recorded in their last executed copy, or
else by ``figures/durations.json``, which each run updates and which is committed with the figures,
so a fresh clone's first run starts its longest notebook first too).
Small models gain nothing from a second thread per kernel and lose much when the cores are
shared; two kernels on two cores use both. With a GPU the default is one notebook at a time.

Each notebook gets a fresh kernel process, forked from a kernel server that has imported torch,
transformers and ``analysis`` once for the whole run (``analysis.kernel_fork``; ~10 CPU-seconds of
imports per notebook otherwise); ``--fresh-kernels`` starts each one from scratch instead.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from analysis.kernel_fork import forked_kernels

KERNEL = "vlm-probes"
NOTEBOOK_NAME = re.compile(r"^\d\d_\w+\.ipynb$")
PER_NOTEBOOK_KEY = "notebooks"
FIGURES_PARAM = "figures_dir"
DURATIONS = "durations.json"  # in the figures folder: {notebook: seconds of its last successful run}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    """What happened to one notebook.

    Attributes:
        notebook: its name without ``.ipynb``.
        ok: True when every cell ran.
        seconds: wall time of the execution.
        figures: sidecar paths (``.json``) written during the run, sorted.
        error: one line, e.g. ``"In [3]: ModelNotFoundError: ..."``; None when ``ok``.
        detail: the failing cell's source and traceback; None when ``ok``.
    """

    notebook: str
    ok: bool
    seconds: float
    figures: list[Path] = field(default_factory=list)
    error: str | None = None
    detail: str | None = None


def find_notebooks(folder: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Return the ``NN_name.ipynb`` notebooks in ``folder``, sorted by name.

    Args:
        folder: the notebooks folder.
        only: names to keep, with or without ``.ipynb``, or just their ``NN`` prefix
            (``["00_quickstart", "01"]``); None keeps all. An unknown name raises ValueError.
    """
    notebooks = sorted(p for p in Path(folder).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
    if only is None:
        return notebooks
    wanted = [name.strip().removesuffix(".ipynb") for name in only if name.strip()]
    chosen = [p for p in notebooks if any(p.stem == w or p.stem.split("_", 1)[0] == w for w in wanted)]
    unknown = [w for w in wanted if not any(p.stem == w or p.stem.split("_", 1)[0] == w for p in notebooks)]
    if unknown:
        raise ValueError(f"no notebook named {', '.join(unknown)} in {folder}; "
                         f"choose from {', '.join(p.stem for p in notebooks)}")
    return chosen


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the parameter file at ``path`` as a dict, with ``overrides`` applied on top.

    Overrides replace shared values and the same key in every per-notebook section.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {str(path)!r} does not exist; see notebooks/params/ for examples")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict) or not isinstance(params.get(PER_NOTEBOOK_KEY, {}), dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values "
                         f"(with an optional '{PER_NOTEBOOK_KEY}:' mapping of per-notebook mappings)")
    overrides = overrides or {}
    sections = {name: {**values, **{k: v for k, v in overrides.items() if k in values}}
                for name, values in params.get(PER_NOTEBOOK_KEY, {}).items()}
    shared = {k: v for k, v in params.items() if k != PER_NOTEBOOK_KEY}
    return {**shared, **overrides, **({PER_NOTEBOOK_KEY: sections} if sections else {})}


def declared_parameters(notebook: Path) -> set[str]:
    """Return the names that ``notebook``'s ``parameters`` cell assigns.

    Read with Python's own parser: papermill's line parser silently drops a parameter whose
    comment it cannot read (e.g. one with parentheses), and a dropped parameter cannot be set.
    """
    cells = json.loads(Path(notebook).read_text())["cells"]
    source = "".join(next((c["source"] for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), []))
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def notebook_params(notebook: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Return the parameters for ``notebook``: shared values, then its own section, restricted
    to the names its ``parameters`` cell declares."""
    declared = declared_parameters(notebook)
    merged = {**{k: v for k, v in params.items() if k != PER_NOTEBOOK_KEY},
              **params.get(PER_NOTEBOOK_KEY, {}).get(notebook.stem, {})}
    return {k: v for k, v in merged.items() if k in declared}


def check_kernel(kernel: str = KERNEL) -> None:
    """Raise RuntimeError, saying how to register it, if Jupyter kernel ``kernel`` is missing."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise RuntimeError(
            f"Jupyter kernel {kernel!r} is not registered: run ./run_all.sh --setup, or "
            f"{sys.executable} -m ipykernel install --sys-prefix --name {kernel} "
            '--display-name "Python (vlm-probes)"') from None


def run_notebook(
    notebook: Path,
    params: dict[str, Any],
    *,
    executed_dir: Path,
    figures_dir: Path,
    kernel: str = KERNEL,
    progress: bool = True,
    km=None,
    manager: type | None = None,
) -> Result:
    """Execute one notebook with papermill and return its ``Result`` (never raises for a
    failing cell).

    Args:
        notebook: the ``.ipynb`` to run; the kernel's working directory is its folder.
        params: the full parameter set (see :func:`load_params`); the notebook gets its share,
            plus ``figures_dir`` when it declares it.
        executed_dir: where the executed copy goes (same file name).
        figures_dir: root folder of the figures; figures written below
            ``figures_dir/<notebook>/`` during the run are counted.
        kernel: the Jupyter kernel to run on.
        progress: show papermill's per-cell progress bar.
        km: None (the default, what ``./run_all.sh`` does): a fresh kernel, shut down afterwards.
            Or a ``jupyter_client.AsyncKernelManager`` shared by several calls: started by the first
            one (in that notebook's folder), kept running, and its namespace cleared (``%reset -f``)
            and figures closed before each later notebook. Imported modules and other process state
            persist, so this is for runs that only check each notebook completes (the test suite),
            not for figures.
        manager: the kernel manager class for a fresh kernel (``km`` None), e.g. the forked kernels of
            ``analysis.kernel_fork.forked_kernels``; None: jupyter_client's own.
    """
    import papermill

    notebook = Path(notebook).resolve()
    figures_dir = Path(figures_dir).resolve()
    executed_dir = Path(executed_dir).resolve()
    executed_dir.mkdir(parents=True, exist_ok=True)
    start, start_ns = time.perf_counter(), time.time_ns()
    error = detail = None
    try:
        values = notebook_params(notebook, {**params, FIGURES_PARAM: str(figures_dir)})
        if km is not None and km.has_kernel:
            _reset(km)
        # The kernel starts in the notebook's folder (nbclient's resources path), without papermill's
        # cwd=, which changes the whole process's directory: notebooks run side by side from threads.
        papermill.execute_notebook(
            str(notebook), str(executed_dir / notebook.name), parameters=values, kernel_name=kernel,
            resources={"metadata": {"path": str(notebook.parent)}}, progress_bar=progress, log_output=False, km=km,
            **({"kernel_manager_class": manager} if manager is not None and km is None else {}))
    except papermill.PapermillExecutionError as err:
        error = f"In [{err.exec_count}]: {err.ename}: {_first_line(err.evalue)}"
        detail = (f"--- {notebook.stem}: failing cell In [{err.exec_count}] ---\n{err.source}\n--- traceback ---\n"
                  + _ANSI.sub("", "\n".join(err.traceback)))
    except Exception as err:  # a kernel that dies or cannot start must not stop the other notebooks
        error = f"{type(err).__name__}: {_first_line(str(err))}"
        detail = error
    seconds = time.perf_counter() - start
    folder = figures_dir / notebook.stem
    figures = sorted(p for p in folder.glob("*.json") if p.stat().st_mtime_ns >= start_ns) if folder.is_dir() else []
    return Result(notebook.stem, error is None, seconds, figures, error, detail)


def _reset(km) -> None:
    """Clear the user namespace of the running kernel ``km`` (IPython's ``%reset -f``) and close its figures."""
    import nbformat
    from nbclient import NotebookClient

    code = ("import sys\nif 'matplotlib.pyplot' in sys.modules:\n    sys.modules['matplotlib.pyplot'].close('all')\n"
            "%reset -f")
    NotebookClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), km=km).execute()


def default_jobs(params: dict[str, Any], n_notebooks: int) -> int:
    """Return how many notebooks to run at once: one per CPU core on a CPU-only run (at most
    ``n_notebooks``), else 1 (notebooks on one GPU would compete for its memory)."""
    device = str(params.get("device", "auto"))
    if device == "auto":
        import torch

        cpu_only = not torch.cuda.is_available() and not (
            getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    else:
        cpu_only = device == "cpu"
    return max(1, min(os.cpu_count() or 1, n_notebooks)) if cpu_only else 1


def last_duration(notebook: Path, executed_dir: Path, figures_dir: Path | None = None) -> float:
    """Return the seconds papermill recorded for ``notebook``'s last executed copy, else the seconds
    ``figures_dir/durations.json`` records for it (``record_durations``), else inf."""
    try:
        meta = json.loads((Path(executed_dir) / notebook.name).read_text())["metadata"]["papermill"]
        return float(meta["duration"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return float(json.loads((Path(figures_dir) / DURATIONS).read_text())[notebook.stem])
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")


def record_durations(results: Sequence[Result], figures_dir: Path) -> None:
    """Write each successful notebook's seconds into ``figures_dir/durations.json`` (others' entries kept)."""
    path = Path(figures_dir) / DURATIONS
    try:
        durations = json.loads(path.read_text())
    except (OSError, ValueError):
        durations = {}
    durations.update({r.notebook: round(r.seconds, 1) for r in results if r.ok})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(durations.items())), indent=2) + "\n")


def run_notebooks(notebooks: Sequence[Path], params: dict[str, Any], *, executed_dir: Path, figures_dir: Path,
                  kernel: str = KERNEL, jobs: int = 1, fork: bool = True, report=print) -> list[Result]:
    """Execute ``notebooks`` (``jobs`` at a time) and return their ``Result`` in the given order.

    With ``jobs > 1`` papermill drives ``jobs`` kernels at once from worker threads (the work is
    in the kernel processes; each inherits ``OMP_NUM_THREADS = cores // jobs`` unless the variable
    is set), longest first by ``last_duration``; ``report(line)`` is called when the run starts
    and as each notebook ends. Each successful notebook's seconds go to ``figures_dir/durations.json``.
    With ``fork`` (default) each notebook gets a fresh kernel forked from one that has imported
    torch, transformers and ``analysis`` (``analysis.kernel_fork``), else one started from scratch.
    """
    notebooks = [Path(p).resolve() for p in notebooks]
    n = len(notebooks)
    label = {path: f"[{i}/{n}] {path.stem}" for i, path in enumerate(notebooks, 1)}
    results: dict[Path, Result] = {}

    def finished(path: Path, result: Result) -> None:
        results[path] = result
        status = f"ok, {len(result.figures)} figure(s)" if result.ok else f"FAILED: {result.error}"
        report(f"{label[path]}: {status} ({result.seconds:.1f} s)")
        if not result.ok:
            print(result.detail, file=sys.stderr, flush=True)

    before = os.environ.get("OMP_NUM_THREADS")
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    try:
        with forked_kernels(kernel) if fork else contextlib.nullcontext() as manager:
            run = functools.partial(run_notebook, params=params, executed_dir=executed_dir, figures_dir=figures_dir,
                                    kernel=kernel, manager=manager)
            kernels = "forked kernels" if manager is not None else "fresh kernels"
            if jobs <= 1:
                report(f"{n} notebook(s), one at a time ({kernels})")
                for path in notebooks:
                    report(label[path])
                    finished(path, run(path))
            else:
                order = sorted(notebooks, key=lambda p: -last_duration(p, executed_dir, figures_dir))
                with ThreadPoolExecutor(max_workers=jobs) as pool:  # each notebook's work is in its own kernel
                    futures = {pool.submit(run, path, progress=False): path for path in order}
                    report(f"{n} notebooks, {jobs} at a time ({os.environ['OMP_NUM_THREADS']} thread(s) per kernel, "
                           f"{kernels}), in this order: {', '.join(p.stem for p in order)}")
                    for future in as_completed(futures):
                        finished(futures[future], future.result())
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    record_durations(list(results.values()), figures_dir)
    return [results[p] for p in notebooks]


def summary_table(results: Sequence[Result]) -> str:
    """Return a plain-text table: notebook, status, seconds, figures written, error."""
    header = ("notebook", "status", "seconds", "figures", "error")
    rows = [(r.notebook, "ok" if r.ok else "FAILED", f"{r.seconds:.1f}", str(len(r.figures)), r.error or "")
            for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    align = ("<", "<", ">", ">")
    lines = ["  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)) + "  " + row[-1]
             for row in [header, *rows]]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(line.rstrip() for line in lines)


def _first_line(text: str, limit: int = 160) -> str:
    line = _ANSI.sub("", text).strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Execute every notebook in notebooks/ with papermill and regenerate figures/.",
        epilog="examples:  python -m analysis --only 00_quickstart -p model tiny:llava --device cpu\n"
               "           python -m analysis --params notebooks/params/llava-1.5-7b.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="notebooks/params/default.yaml", metavar="FILE",
                        help="YAML parameter file (default: %(default)s)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override one parameter; VALUE is read as YAML (e.g. -p layers '[0, 1]')")
    parser.add_argument("--model", help="shorthand for -p model MODEL (hub id, folder, zoo:<name>, tiny:<family>)")
    parser.add_argument("--device", help="shorthand for -p device DEVICE (cpu, cuda, cuda:1, mps, auto)")
    parser.add_argument("--only", metavar="NAMES", help="comma-separated notebooks to run, e.g. 00_quickstart,01")
    parser.add_argument("--notebooks", default="notebooks", metavar="DIR", help="notebooks folder (default: %(default)s)")
    parser.add_argument("--executed", default="notebooks/executed", metavar="DIR",
                        help="where executed copies go (default: %(default)s)")
    parser.add_argument("--figures", default="figures", metavar="DIR", help="figures folder (default: %(default)s)")
    parser.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (default: %(default)s)")
    parser.add_argument("-j", "--jobs", type=int, metavar="N",
                        help="notebooks run at the same time (default: one per CPU core on a CPU-only run, "
                             "1 with a GPU); each kernel gets cores // N threads")
    parser.add_argument("--fresh-kernels", action="store_true",
                        help="start every kernel from scratch instead of forking it from one that has imported "
                             "torch, transformers and analysis (analysis.kernel_fork)")
    parser.add_argument("--list", action="store_true", help="list the notebooks and their parameters, run nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the notebooks as the command line says; return the exit status (0 all ok, 1 some
    failed, 2 bad arguments or set-up)."""
    args = _parse_args(argv)
    overrides = {key: yaml.safe_load(value) for key, value in args.param}
    overrides.update({k: v for k, v in (("model", args.model), ("device", args.device)) if v is not None})
    try:
        notebooks = find_notebooks(args.notebooks, args.only.split(",") if args.only else None)
        params = load_params(args.params, overrides)
        if not notebooks:
            raise ValueError(f"no NN_name.ipynb notebooks in {args.notebooks}")
        if args.list:
            for notebook in notebooks:
                print(f"{notebook.stem}: {notebook_params(notebook, {**params, FIGURES_PARAM: args.figures})}")
            return 0
        check_kernel(args.kernel)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    declared = set().union(*(declared_parameters(n) for n in notebooks))
    for key in sorted(set(overrides) - declared):
        print(f"warning: no selected notebook has a parameter {key!r}; it is ignored", file=sys.stderr)

    jobs = args.jobs if args.jobs is not None else default_jobs(params, len(notebooks))
    if jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    print(f"Running {len(notebooks)} notebook(s) on kernel {args.kernel!r} with {args.params}"
          + (f" and overrides {overrides}" if overrides else ""), flush=True)
    results = run_notebooks(notebooks, params, executed_dir=Path(args.executed), figures_dir=Path(args.figures),
                            kernel=args.kernel, jobs=min(jobs, len(notebooks)), fork=not args.fresh_kernels,
                            report=lambda line: print(line, flush=True))
    print("\n" + summary_table(results))
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results) - failed} ok, {failed} failed; executed notebooks in {args.executed}/, "
          f"figures in {args.figures}/")
    return 1 if failed else 0
