"""The project installs itself: one dependency list, mirrored in environment.yml."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def normalize(requirement: str) -> str:
    name, spec = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + spec.replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {normalize(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {normalize(r) for r in extra}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip_lists) == 1
    assert {normalize(r) for r in pip_lists[0]} == declared
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_torch_is_pinned_to_the_cuda_build_that_works_with_torchvision() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_readme_and_ci_use_the_two_make_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_console_script_and_module_entry_point() -> None:
    bin_dir = Path(sys.executable).parent
    for command in ([str(bin_dir / "benchlib"), "--help"], [sys.executable, "-m", "benchlib", "--help"]):
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
        assert "validate" in out and "bench" in out


def test_outputs_folder_is_ignored_but_kept() -> None:
    tracked = subprocess.run(["git", "ls-files", "outputs"], cwd=REPO, capture_output=True, text=True).stdout
    if tracked:  # inside a git checkout
        assert tracked.split() == ["outputs/.gitkeep"]
