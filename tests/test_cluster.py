"""Scale-out for real: a Dask scheduler and workers on 127.0.0.1, and an S3 server on 127.0.0.1."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from benchlib.results import read_records, read_summary
from tests.helpers import run_cli, tiny_params

# Real processes: a scheduler, workers and an S3 server, and notebooks run on them (seconds to tens of seconds
# each; an unreachable scheduler alone waits for its timeout): `make test` runs them, `make test-fast` does not.
pytestmark = pytest.mark.slow

# The command line runs redirected here (run_cli(None, ...)), not through capsys: run_on_cluster's `log`
# defaults to the sys.stderr of the moment benchlib.scale.cluster is first imported, so with capsys the
# first test's stream, closed when that test ends, would be written to by the next ones.

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and workers as subprocesses, all on 127.0.0.1, stopped by the test that started them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.processes: dict[str, subprocess.Popen] = {}
        self._start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                  self.address.rsplit(":", 1)[1], "--no-dashboard"])

    def _start(self, name: str, command: list[str]) -> None:
        log = (self.tmp / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def add_worker(self, name: str, resource: str) -> None:
        self._start(name, [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1", "--name", name,
                           "--resources", f"{resource}=1", "--nthreads", "1", "--no-nanny", "--no-dashboard"])

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="30s")

    def wait_for_workers(self, count: int) -> dict[str, str]:
        """Worker name -> address, once `count` workers have joined."""
        with self.client() as client:
            client.wait_for_workers(count, timeout=60)
            return {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}

    def kill(self, name: str) -> None:
        self.processes[name].kill()
        self.processes[name].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()


@pytest.fixture
def cluster(tmp_path: Path):
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def instance_params(tmp: Path, instance: str, **overrides) -> Path:
    path = tmp / f"{instance}.yaml"
    path.write_text(yaml.safe_dump(tiny_params(instance=instance, **{"batch_sizes": [1, 2], **overrides})))
    return path


def test_each_run_goes_to_a_worker_of_its_instance_and_the_report_merges_them(cluster, tmp_path: Path) -> None:
    cluster.add_worker("worker-a", "tiny-a")
    cluster.add_worker("worker-b", "tiny-b")
    addresses = cluster.wait_for_workers(2)
    # tiny-b searches its grid instead of sweeping it: a search runs on a worker as a sweep does.
    search = {"models": ["synthetic:1"], "min_requests": 6, "search": {"latency_budget_ms": 100, "percentile": "p50"}}
    paths = [instance_params(tmp_path, "tiny-a"), instance_params(tmp_path, "tiny-b", **search),
             instance_params(tmp_path, "tiny-c")]
    out = tmp_path / "outputs"
    code, log = run_cli(None, "run", *map(str, paths), "--out", str(out), "--cluster", cluster.address)
    assert code == 1, log  # tiny-c has no worker: reported at once, not left waiting
    assert "no worker advertises the resource 'tiny-c'" in log and "2 of 3 params files ran" in log
    assert "tiny-a: 1 done, 0 running, 0 waiting, 0 failed" in log
    for instance, worker in (("tiny-a", "worker-a"), ("tiny-b", "worker-b")):
        (run_dir,) = list((out / instance).iterdir())
        env = json.loads((run_dir / "env.json").read_text())
        assert env["dask_worker"] == addresses[worker]
        assert len(read_summary(run_dir)) == 2 and (run_dir / "benchmark.html").exists()
        assert (run_dir / "search.csv").exists() == (instance == "tiny-b")
    code, log = run_cli(None, "report", "--out", str(out), "--latency-budget-ms", "1000", "--percentile", "p50")
    assert code == 0, log
    html = (out / "report.html").read_text()
    assert "tiny-a" in html and "tiny-b" in html


def test_a_task_whose_worker_dies_is_retried_on_another(cluster, tmp_path: Path) -> None:
    cluster.add_worker("k1", "tiny-k")
    cluster.add_worker("k2", "tiny-k")
    addresses = cluster.wait_for_workers(2)
    path = instance_params(tmp_path, "tiny-k", batch_sizes=[1, 2, 4, 8], threads=[1, 2], duration_s=0.5)
    out = tmp_path / "outputs"
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(zip(("code", "log"), run_cli(
        None, "run", str(path), "--out", str(out), "--cluster", cluster.address))))
    runner.start()
    victim = None
    with cluster.client() as client:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            busy = [address for address, keys in client.processing().items() if keys]
            victim = next((name for name, address in addresses.items() if address in busy), None)
            time.sleep(0.2)
    assert victim, "the task never started"
    time.sleep(3)  # let it get into the sweep
    cluster.kill(victim)
    runner.join(timeout=300)
    assert result["code"] == 0, result["log"]
    (run_dir,) = list((out / "tiny-k").iterdir())
    survivor = next(name for name in addresses if name != victim)
    assert json.loads((run_dir / "env.json").read_text())["dask_worker"] == addresses[survivor]
    summary = read_summary(run_dir)
    assert len(summary) == 8 and not summary.duplicated(["batch_size", "threads"]).any()
    assert read_records(run_dir)["point"].nunique() == 8


def test_a_task_with_no_worker_left_is_reported(cluster, tmp_path: Path) -> None:
    cluster.add_worker("only", "tiny-o")
    cluster.wait_for_workers(1)
    path = instance_params(tmp_path, "tiny-o", batch_sizes=[1, 2, 4, 8], threads=[1, 2], duration_s=0.5)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(zip(("code", "log"), run_cli(
        None, "run", str(path), "--out", str(tmp_path / "out"), "--cluster", cluster.address, "--worker-wait-s", "5"))))
    runner.start()
    with cluster.client() as client:
        deadline = time.monotonic() + 120
        while not any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.2)
    cluster.kill("only")
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert result["code"] == 1 and "no worker advertising 'tiny-o' is left" in result["log"]
    assert not (tmp_path / "out" / "tiny-o").exists()  # nothing partial merged


def test_an_unreachable_scheduler_is_bad_input(tmp_path: Path) -> None:
    code, log = run_cli(None, "run", str(instance_params(tmp_path, "tiny-a")), "--out", str(tmp_path / "o"),
                        "--cluster", f"tcp://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach the Dask scheduler" in log


@pytest.fixture
def s3(monkeypatch):
    """An S3-compatible server (moto) on 127.0.0.1 with one bucket; stopped after the test."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    # moto keeps its buckets in this process across servers: each test starts from none.
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"),
                           timeout=10).close()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"})
    fs.mkdir("bench")
    try:
        yield fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_outputs_on_s3_written_and_reported_through_the_cli(s3, tmp_path: Path) -> None:
    url = "s3://bench/study"
    code, log = run_cli(None, "run", str(instance_params(tmp_path, "tiny-s")), "--out", url)
    assert code == 0, log
    assert "-> s3://bench/study/tiny-s/" in log
    (run_dir,) = s3.ls("bench/study/tiny-s")
    names = {Path(p).name for p in s3.ls(run_dir)}
    assert {"summary.csv", "records.parquet", "benchmark.ipynb", "benchmark.html", "env.json"} <= names
    code, log = run_cli(None, "report", "--out", url, "--latency-budget-ms", "1000", "--percentile", "p50")
    assert code == 0, log
    assert "report: s3://bench/study/report.html" in log
    html = s3.cat_file("bench/study/report.html").decode()
    assert "tiny-s" in html and "<script" not in html
    assert s3.cat_file("bench/study/frontier.csv").decode().startswith("model,instance,budget_ms")
    assert sorted(Path(p).name for p in s3.ls("bench/study/figures")) == [
        "cost_vs_batch.png", "cost_vs_latency_budget.png", "throughput_latency_vs_batch.png",
        "throughput_vs_latency.png"]  # no peak measured, no energy counter: those charts are left out
    # A second report replaces its own files up there (the mark's hashes came back down and up again).
    code, log = run_cli(None, "report", "--out", url, "--latency-budget-ms", "1000", "--percentile", "p50")
    assert code == 0, log
    assert set(json.loads(s3.cat_file("bench/study/.benchlib.json"))["files"]) >= {"report.html", "report.ipynb"}


def test_outputs_on_s3_never_replace_a_users_object(s3, tmp_path: Path) -> None:
    s3.pipe_file("bench/mine/report.html", b"the user's page")
    s3.pipe_file("bench/mine/tiny-s/notes.txt", b"the user's notes")
    for argv in (["run", str(instance_params(tmp_path, "tiny-s")), "--out", "s3://bench/mine"],
                 ["report", "--out", "s3://bench/mine"]):
        code, log = run_cli(None, *argv)
        assert code == 2 and "s3://bench/mine is not a benchlib outputs folder" in log, log
        assert "report.html (not written by benchlib" in log and "tiny-s/notes.txt" in log
    assert s3.cat_file("bench/mine/report.html") == b"the user's page"
    assert sorted(s3.find("bench/mine")) == ["bench/mine/report.html", "bench/mine/tiny-s/notes.txt"]
