"""`make lab` starts JupyterLab, as root too (the Dockerfile's user), on 127.0.0.1 only."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import env_without_make

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"


def test_make_lab_passes_allow_root_only_as_root() -> None:
    command = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True,
                             env=env_without_make()).stdout
    assert "--ServerApp.ip=127.0.0.1" in command
    assert ("--allow-root" in command) == (os.geteuid() == 0)


@pytest.mark.slow
@pytest.mark.skipif(not JUPYTER.is_file(), reason="no jupyter beside this interpreter")
def test_make_lab_starts_and_listens_on_loopback_only(tmp_path: Path) -> None:
    env = {**env_without_make(), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "lab.log"
    args = "LAB_ARGS=--no-browser --ServerApp.port=0 --ServerApp.token=test --LabApp.news_url=None"
    with log.open("w") as out:
        make = subprocess.Popen(["make", "lab", f"BIN={JUPYTER.parent}", "STAMP=", args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        url = None
        while time.monotonic() < deadline and make.poll() is None:
            url = re.search(r"http://127\.0\.0\.1:(\d+)/lab", log.read_text())
            if url:
                break
            time.sleep(0.5)
        assert url, f"JupyterLab did not start:\n{log.read_text()[-2000:]}"
        port = int(url.group(1))
        processes = [psutil.Process(make.pid), *psutil.Process(make.pid).children(recursive=True)]
        listening = [c.laddr for p in processes for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert any(addr.port == port for addr in listening)
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
