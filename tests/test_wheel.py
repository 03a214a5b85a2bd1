"""The built wheel, installed (not editable) in a fresh virtual environment, runs its notebooks on itself.

The wheel is built from a clean copy of the source, installed with `--no-deps` into a
throwaway venv whose dependencies come from this environment through a `.pth` file
(its own site-packages first, so its benchlib is the wheel's), and every command runs
from a folder outside the repository. The notebooks print which benchlib they imported
and which interpreter ran them: both must be the throwaway venv's.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.helpers import tiny_params

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "outputs", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", ".ruff_cache")
PROVENANCE = re.compile(r"benchlib \S+ from (\S+), run by (\S+)")


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A throwaway venv with the wheel installed; returns its interpreter, its site-packages, and a
    work folder outside the repository with a tiny params file."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A clean copy, so no stale build/ output of the checkout ends up in the wheel.
    source = tmp / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "--disable-pip-version-check", "-w", tmp / "dist", "."], cwd=source)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("benchlib-*.whl")

    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # pip of this environment installs into the venv's interpreter (scripts get its shebang).
    done = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                "--disable-pip-version-check", wheel], cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             cwd=tmp).stdout.strip())
    # The dependencies: this environment's site-packages, after the venv's own (a path, not a site dir,
    # so its .pth files, among them the editable benchlib's, are not read).
    (site_packages / "zz_benchlib_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp / "work"
    work.mkdir()
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny_params(instance="from-wheel")))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The dependencies' data files too (nbconvert's HTML templates), which a real install puts in the
    # venv's share/jupyter. This also shows the venv the `benchlib` kernel make registers for .venv:
    # the notebooks must not run in it.
    env["JUPYTER_PATH"] = os.pathsep.join([str(Path(sys.prefix) / "share" / "jupyter"),
                                           *filter(None, [os.environ.get("JUPYTER_PATH")])])
    return {"venv": venv, "python": python, "site_packages": site_packages, "work": work, "env": env}


def benchlib(installed: dict, *args: str) -> subprocess.CompletedProcess:
    return run([installed["venv"] / "bin" / "benchlib", *args], cwd=installed["work"], env=installed["env"])


def provenance(notebook: Path) -> tuple[str, str]:
    """Where the notebook's benchlib came from, and the interpreter its kernel ran."""
    text = "".join(o.get("text", "") for c in nbformat.read(str(notebook), as_version=4).cells
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
    found = PROVENANCE.search(text)
    assert found, text
    return found.group(1), found.group(2)


def assert_ran_on_the_wheel(installed: dict, notebook: Path) -> None:
    package, interpreter = provenance(notebook)
    assert Path(package) == installed["site_packages"] / "benchlib"
    assert Path(interpreter) == installed["python"]
    assert str(REPO) not in package and str(REPO) not in interpreter


def test_the_wheel_is_installed_not_linked(installed) -> None:
    out = run([installed["python"], "-c", "import benchlib; print(benchlib.__file__)"], cwd=installed["work"],
              env=installed["env"]).stdout.strip()
    assert Path(out) == installed["site_packages"] / "benchlib" / "__init__.py"
    package = installed["site_packages"] / "benchlib"
    assert (package / "notebooks" / "benchmark.ipynb").is_file() and not (package / "notebooks").is_symlink()
    assert (package / "data" / "prices.yaml").is_file()
    assert (installed["venv"] / "bin" / "benchlib").read_text().splitlines()[0] == f"#!{installed['python']}"


def test_validate(installed) -> None:
    done = benchlib(installed, "validate", "tiny.yaml")
    assert done.returncode == 0 and "tiny.yaml: ok: instance from-wheel" in done.stdout, done.stderr


def test_report_of_the_seed_example(installed) -> None:
    done = benchlib(installed, "report", "--example", "seed", "--out", "seed")
    assert done.returncode == 0, done.stderr[-3000:]
    seed = installed["work"] / "seed"
    assert (seed / "report.html").is_file() and len(list((seed / "figures").glob("*.png"))) == 4  # no FLOPs, no energy
    assert_ran_on_the_wheel(installed, seed / "report.ipynb")


def test_run_of_a_tiny_grid(installed) -> None:
    done = benchlib(installed, "run", "tiny.yaml", "--out", "runs")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert re.findall(r"^\[(\d)/2\] ", done.stderr, re.MULTILINE) == ["1", "2"]
    assert "without encryption" not in done.stderr
    (run_dir,) = (installed["work"] / "runs" / "from-wheel").iterdir()
    assert (run_dir / "summary.csv").is_file() and (run_dir / "benchmark.html").is_file()
    assert_ran_on_the_wheel(installed, run_dir / "benchmark.ipynb")
