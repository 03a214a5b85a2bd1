"""YOLOv5 through the optional ultralytics extra: offline, our threads kept, and its pipeline pieces.

Tests marked `yolo` need ultralytics (`make test-yolo` installs it); they are skipped without it.
letterbox, nms and the validation error need only torch.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from benchlib.cli import main
from benchlib.measure.yolo import YOLO_CONF_THRESHOLD, letterbox, nms
from tests.helpers import tiny_params

REPO = Path(__file__).resolve().parents[1]
HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None
needs_ultralytics = pytest.mark.skipif(not HAS_ULTRALYTICS, reason="needs the yolo extra: pip install 'benchlib[yolo]'")

#: The study's figures (original, anchor-based YOLOv5 v6.0): GFLOPs and parameters in millions.
STUDY = {"yolov5s": (16.5, 7.2), "yolov5m": (49.1, 21), "yolov5l": (109.3, 46), "yolov5x": (205.9, 86)}
#: What ultralytics 8.4 builds (the anchor-free "u" variants, Conv+BN fused), at 640.
OURS = {"yolov5s": (24.0, 9.14), "yolov5m": (64.2, 25.09), "yolov5l": (135.0, 53.19), "yolov5x": (246.4, 97.23)}


# --- without ultralytics -------------------------------------------------------------------------

def test_asking_for_yolo_without_the_extra_is_exit_2_with_the_pip_line(write_params, capsys, monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "ultralytics" else real_find_spec(name, *a, **k))
    path = write_params(tiny_params(models=[{"name": "yolov5s"}]))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'benchlib[yolo]'" in err and "AGPL-3.0" in err and "Traceback" not in err


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_grey_114() -> None:
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # already 640 wide: padding only
    small = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)  # scaled x3.2 to 320 x 640
    out = letterbox([wide, small], 640)
    assert out.shape == (2, 3, 640, 640) and out.dtype == torch.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    grey = torch.tensor(114 / 255)
    assert torch.allclose(out[0, :, :80], grey) and torch.allclose(out[0, :, 560:], grey)
    assert torch.allclose(out[0, :, 80:560], torch.from_numpy(wide).permute(2, 0, 1).float() / 255)
    assert torch.allclose(out[1, :, :160], grey) and torch.allclose(out[1, :, 480:], grey)
    assert not torch.allclose(out[1, :, 160], grey)
    # A uint8 tensor [B, H, W, 3] gives the same as a list of arrays, on its own device.
    batch = letterbox(torch.from_numpy(np.stack([wide, wide])), 640)
    assert torch.equal(batch[1], out[0])
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        letterbox(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), 640)


def _predictions(boxes_cxcywh: list[list[float]], scores: list[list[float]]) -> torch.Tensor:
    """Raw predictions [1, 4 + nc, A] from per-anchor boxes and class scores."""
    return torch.cat([torch.tensor(boxes_cxcywh).T, torch.tensor(scores).T]).unsqueeze(0)


def test_nms_counts_candidates_and_keeps_one_box_per_overlapping_group_and_class() -> None:
    predictions = _predictions(
        [[50, 50, 20, 20], [51, 50, 20, 20], [50, 50, 20, 20], [200, 200, 10, 10], [300, 300, 10, 10]],
        [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.3, 0.0], [0.0005, 0.0]],
    )
    detections, candidates, kept = nms(predictions, conf_threshold=0.001)
    # Anchor 4 is under the threshold; anchor 1 overlaps anchor 0 (same class) and goes; anchor 2 is
    # another class, so it stays although it overlaps.
    assert candidates == [4] and kept == [3]
    assert detections[0].shape == (3, 6)
    assert detections[0][0].tolist() == pytest.approx([40, 40, 60, 60, 0.9, 0])
    assert sorted(detections[0][:, 5].tolist()) == [0, 0, 1]
    _, candidates, kept = nms(predictions, conf_threshold=0.5)
    assert candidates == [3] and kept == [2]
    detections, _, kept = nms(predictions, conf_threshold=0.001, max_det=1)
    assert kept == [1] and detections[0][0, 4] == pytest.approx(0.9)
    empty, candidates, kept = nms(predictions, conf_threshold=0.95)
    assert candidates == [0] and kept == [0] and empty[0].shape == (0, 6)


# --- with ultralytics ----------------------------------------------------------------------------

OFFLINE_PROBE = textwrap.dedent("""
    import ipaddress, json, os, socket, sys
    attempts = []

    def outside(host):
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host not in ("localhost",)

    def guard(name, real, host_of):
        def wrapper(*args, **kwargs):
            host = host_of(*args, **kwargs)
            if host is not None and outside(str(host)):
                attempts.append(f"{name} {host}")
                raise OSError(f"blocked: {name} {host}")
            return real(*args, **kwargs)
        return wrapper

    address = lambda a: a[0] if isinstance(a, tuple) else None
    socket.socket.connect = guard("connect", socket.socket.connect, lambda self, a: address(a))
    socket.socket.connect_ex = guard("connect_ex", socket.socket.connect_ex, lambda self, a: address(a))
    socket.socket.sendto = guard("sendto", socket.socket.sendto, lambda self, *a: address(a[-1]))
    socket.create_connection = guard("create_connection", socket.create_connection, lambda a, *r, **k: a[0])
    socket.getaddrinfo = guard("getaddrinfo", socket.getaddrinfo, lambda host, *r, **k: host)

    import torch
    torch.set_num_threads(3)
    from benchlib.measure.zoo import load_model
    from benchlib.model_spec import ModelSpec
    loaded = load_model(ModelSpec(name="yolov5s", image_size=64), torch.device("cpu"), seed=0)
    print(json.dumps({"attempts": attempts, "threads": torch.get_num_threads(),
                      "omp": os.environ.get("OMP_NUM_THREADS"), "offline": os.environ.get("YOLO_OFFLINE"),
                      "ultralytics": "ultralytics" in sys.modules, "source": loaded.weights_source}))
""")


@pytest.mark.yolo
@needs_ultralytics
@pytest.mark.parametrize("omp", [None, "2"])
def test_building_yolo_opens_no_outside_socket_and_keeps_our_threads(omp: str | None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "OMP_NUM_THREADS"))}
    env["YOLO_CONFIG_DIR"] = str(tmp_path)  # its settings file, away from the user's
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    run = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe["ultralytics"] and "yolov5su" in probe["source"]
    assert probe["attempts"] == []
    assert probe["threads"] == 3 and probe["omp"] == omp and probe["offline"] == "true"


@pytest.mark.yolo
@needs_ultralytics
def test_the_guard_in_the_probe_does_catch_ultralytics_online_check(tmp_path: Path) -> None:
    """Without YOLO_OFFLINE, ultralytics' import-time DNS look-ups hit the guard (so its silence above means something)."""
    probe = OFFLINE_PROBE.split("import torch")[0] + textwrap.dedent("""
        os.environ["YOLO_OFFLINE"] = "false"
        import ultralytics
        print(json.dumps({"attempts": attempts}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["YOLO_CONFIG_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert any(a.startswith("getaddrinfo ") for a in json.loads(run.stdout.strip().splitlines()[-1])["attempts"])


@pytest.mark.yolo
@needs_ultralytics
class TestWithUltralytics:
    def test_yolov5s_loads_through_the_zoo_at_640_and_returns_one_tensor(self) -> None:
        from benchlib.measure.flops import flops_per_inference
        from benchlib.measure.zoo import load_model
        from benchlib.model_spec import ModelSpec

        spec = ModelSpec(name="yolov5s")
        assert spec.image_size == 640
        loaded = load_model(spec, torch.device("cpu"), seed=0)
        assert not loaded.module.training
        assert "yolov5su architecture (anchor-free 'u' variant, not the original anchor-based YOLOv5)" in \
            loaded.weights_source
        images = loaded.make_inputs(2, torch.Generator().manual_seed(0))
        assert images.shape == (2, 3, 640, 640)
        with torch.no_grad():
            out = loaded.module(images)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 84, 8400)
        assert flops_per_inference(loaded, seed=0).flops_per_inference / 1e9 == pytest.approx(24.0, rel=0.01)

    def test_config_overrides_the_architecture_definition(self) -> None:
        from benchlib.errors import WorkloadError
        from benchlib.measure.zoo import load_model
        from benchlib.model_spec import ModelSpec

        loaded = load_model(ModelSpec(name="yolov5s", image_size=64, config={"nc": 20}), torch.device("cpu"), 0)
        with torch.no_grad():
            out = loaded.module(torch.rand(1, 3, 64, 64))
        assert out.shape == (1, 24, 64 + 16 + 4) and "config overrides {'nc': 20}" in loaded.weights_source
        with pytest.raises(WorkloadError, match="unknown `config` keys"):
            load_model(ModelSpec(name="yolov5s", image_size=64, config={"layers": 3}), torch.device("cpu"), 0)

    def test_random_yolov5s_gives_nms_a_realistic_load_at_the_default_threshold(self) -> None:
        from benchlib.measure.yolo import YOLO_MAX_DET, build

        torch.manual_seed(0)
        model = build("yolov5s")
        rng = np.random.default_rng(0)
        images = letterbox([rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)], 640)
        with torch.no_grad():
            predictions = model(images)
        detections, candidates, kept = nms(predictions, YOLO_CONF_THRESHOLD)
        assert all(500 <= n < 8400 for n in candidates), candidates  # thousands, not none and not all
        assert kept == [YOLO_MAX_DET] * 2 and all(d.shape == (YOLO_MAX_DET, 6) for d in detections)
        _, confident, _ = nms(predictions, 0.25)
        assert all(c < n for c, n in zip(confident, candidates))

    @pytest.mark.parametrize("name", ["yolov5s", pytest.param("yolov5m", marks=pytest.mark.slow),
                                      pytest.param("yolov5l", marks=pytest.mark.slow),
                                      pytest.param("yolov5x", marks=pytest.mark.slow)])
    def test_model_counts_of_the_u_variants_next_to_the_study(self, name: str) -> None:
        from benchlib.present.study import model_counts

        counts = model_counts(name)
        gflops, millions = OURS[name]
        assert counts["variant"] == f"{name}u" and counts["image_size"] == 640
        assert counts["gflops"] == pytest.approx(gflops, rel=0.005)
        assert counts["parameters"] / 1e6 == pytest.approx(millions, rel=0.005)
        # Larger than the study's anchor-based originals: the decoupled anchor-free head.
        study_gflops, study_millions = STUDY[name]
        assert counts["gflops"] > study_gflops and counts["parameters"] / 1e6 > study_millions
        assert "2 x multiply-adds" in counts["flops_convention"]
