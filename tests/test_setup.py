"""The two install paths (run_all.sh and environment.yml) install the same thing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run_all() -> str:
    return (ROOT / "run_all.sh").read_text()


def test_environment_yml_matches_run_all():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    torch_pin = re.search(r'TORCH_PIN="([^"]+)"', _run_all()).group(1).split()
    assert [p for p in pip if p.startswith("torch")] == torch_pin
    extras = re.search(r'project=\(-c requirements-lock.txt -e "\.\[([^\]]+)\]"\)', _run_all()).group(1)
    assert f"-e .[{extras}]" in pip and "-c requirements-lock.txt" in pip
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=" + python.split("=")[1]
    assert set(extras.split(",")) <= set(project["optional-dependencies"])


def test_pins_satisfy_the_declared_ranges():
    from packaging.requirements import Requirement

    deps = {Requirement(d).name: Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for pin in re.search(r'TORCH_PIN="([^"]+)"', _run_all()).group(1).split():
        name, version = pin.split("==")
        assert deps[name].specifier.contains(version), pin


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./run_all.sh --test" in readme and "\n./run_all.sh\n" in readme
    ci_commands = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci_commands == ["./run_all.sh --test"]


def _lock() -> dict[str, str]:
    lines = (ROOT / "requirements-lock.txt").read_text().splitlines()
    return dict(line.lower().split("==") for line in lines if line and not line.startswith("#"))


def test_the_lock_pins_every_dependency_within_its_range_and_is_installed():
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = {canonicalize_name(k): v for k, v in _lock().items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(d) for d in project["dependencies"]]
    declared += [Requirement(d) for extra in project["optional-dependencies"].values() for d in extra]
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name in ("torch", "torchvision"):  # pinned by TORCH_PIN, kept when already installed
            continue
        assert name in lock, f"{name} is missing from requirements-lock.txt"
        assert requirement.specifier.contains(lock[name], prereleases=True), (name, lock[name])
    for name in ("transformers", "tokenizers", "accelerate", "captum", "papermill", "numpy"):
        try:
            assert version(name) == lock[name], f"installed {name} {version(name)} is not the locked {lock[name]}"
        except PackageNotFoundError:
            raise AssertionError(f"{name} is not installed") from None
