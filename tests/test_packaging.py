"""The project installs itself: one dependency list, mirrored in environment.yml."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import env_without_make

REPO = Path(__file__).resolve().parents[1]
#: make's flags so that nothing is (re)installed: the stamp counts as up to date, and the tools
#: are this interpreter's (.venv's under make, a conda environment's otherwise).
MAKE_AS_IS = ["make", "-C", str(REPO), "-o", ".venv/.installed", f"BIN={Path(sys.executable).parent}"]


def normalize(requirement: str) -> str:
    name, spec = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + spec.replace(" ", "")


#: Extras that environment.yml does not install but lists in comments, `# extra <name>: <requirement>`.
COMMENTED_EXTRAS = ("gpu",)


def test_environment_yml_lists_the_same_dependencies_as_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(COMMENTED_EXTRAS) <= set(extras)
    declared = {normalize(r) for r in project["dependencies"]}
    for name, extra in extras.items():
        if name not in COMMENTED_EXTRAS:
            declared |= {normalize(r) for r in extra}
    text = (REPO / "environment.yml").read_text()
    env = yaml.safe_load(text)
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip_lists) == 1
    assert {normalize(r) for r in pip_lists[0]} == declared
    for name in COMMENTED_EXTRAS:
        commented = re.findall(rf"^\s*#\s*extra {name}:\s*(\S.*?)\s*$", text, flags=re.MULTILINE)
        assert {normalize(r) for r in commented} == {normalize(r) for r in extras[name]}, name
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_torch_is_pinned_to_the_cuda_build_that_works_with_torchvision() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_readme_and_ci_use_the_two_make_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme and "make lab" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@needs_make
def test_make_test_lints_with_ruff_before_the_tests() -> None:
    commands = subprocess.run([*MAKE_AS_IS, "-n", "test"], capture_output=True, text=True, check=True,
                              env=env_without_make()).stdout
    assert re.search(r"ruff check \.\n.*-m pytest", commands)
    ruff = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]
    assert {"F", "E9", "B", "RUF100"} <= set(ruff["lint"]["select"]) and "outputs" in ruff["extend-exclude"]


@needs_make
@pytest.mark.slow
def test_make_lab_serves_the_notebooks_with_the_benchlib_kernel_on_localhost() -> None:
    pytest.importorskip("jupyterlab")
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    extra = f"--no-browser --ServerApp.port={port} --ServerApp.port_retries=0 --IdentityProvider.token=t"
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers
        extra += " --allow-root"
    lab = subprocess.Popen([*MAKE_AS_IS, "lab", f"LAB_ARGS={extra}"], env=env_without_make(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token=t", timeout=5) as r:
                    kernelspecs = json.load(r)
                break
            except OSError:
                assert lab.poll() is None and time.monotonic() < deadline, "JupyterLab did not start"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token=t", timeout=5) as r:
            contents = {item["name"] for item in json.load(r)["content"]}
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
    assert kernelspecs["default"] == "benchlib" and "benchlib" in kernelspecs["kernelspecs"]
    assert {"benchmark.ipynb", "report.ipynb"} <= contents
    for notebook in ("benchmark.ipynb", "report.ipynb"):
        assert json.loads((REPO / "notebooks" / notebook).read_text())["metadata"]["kernelspec"]["name"] == "benchlib"
    # It listened on the loopback interface only.
    with pytest.raises(OSError), socket.create_connection((_outward_address(), port), timeout=2):
        pass


def _outward_address() -> str:
    """This machine's address on its network (not loopback), or a loopback one there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent
            return s.getsockname()[0]
        except OSError:
            pytest.skip("no network interface besides loopback")


def test_console_script_and_module_entry_point() -> None:
    bin_dir = Path(sys.executable).parent
    for command in ([str(bin_dir / "benchlib"), "--help"], [sys.executable, "-m", "benchlib", "--help"]):
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
        assert "validate" in out and "bench" in out


def test_outputs_folder_is_ignored_but_kept() -> None:
    tracked = subprocess.run(["git", "ls-files", "outputs"], cwd=REPO, capture_output=True, text=True).stdout
    if tracked:  # inside a git checkout
        assert tracked.split() == ["outputs/.gitkeep"]
