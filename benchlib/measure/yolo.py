"""YOLOv5 detectors, built by the optional `ultralytics` package, and their pipeline pieces.

All of benchlib's use of `ultralytics` (AGPL-3.0; `pip install 'benchlib[yolo]'`) is in this
module, and ultralytics is imported only when a YOLO model is asked for (`import_ultralytics`).

Which architecture runs. ultralytics ships one YOLOv5 definition, ``cfg/models/v5/yolov5.yaml``
(the v6.0 backbone and neck, scales n/s/m/l/x), and builds it with its own anchor-free,
decoupled ``Detect`` head: the "u" variants (yolov5su ...). The package has no anchor-based
YOLOv5 head, so the original YOLOv5 that the study measured (yolov5s: 7.2M parameters,
16.5 GFLOPs) cannot be built from it. The backbone and neck are the original's; the head is
larger, hence 9.1M parameters and 24.0 GFLOPs for yolov5su. `weights_source` says so.

Random weights, made to behave. With PyTorch's default initialisation the activations of a
deep random network shrink layer by layer, and ultralytics also biases the class scores to about
1e-5 (``Detect.bias_init``): every box of a random YOLO is the same and no score passes any
threshold, so NMS would have nothing to do. We therefore set each BatchNorm's running
statistics from one training-mode pass over two noise images (as a trained network's BatchNorm
keeps its activations at unit scale), then fuse Conv and BatchNorm as YOLOv5's and ultralytics'
inference does. The weights stay random; the FLOPs and parameters are unchanged by either step.

Output. The module's forward takes float images [B, 3, S, S] and returns one tensor of raw
predictions [B, 4 + 80, A]: per anchor point, the box (centre x, centre y, width, height in
input pixels) and 80 sigmoid class scores; A = (S/8)² + (S/16)² + (S/32)², 8400 at S = 640.
`nms` turns it into detections.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch

from benchlib.errors import WorkloadError
from benchlib.params_base import YOLO_INSTALL, YOLO_MODELS

#: The confidence threshold of the YOLO pipeline's NMS: YOLOv5's val.py default. With our
#: random weights (see the module docstring) yolov5s sends 1,144 to 3,356 of its 8,400 boxes
#: into NMS per letterboxed 640x480 noise image (median 2,239; 8 images), and NMS keeps the 300
#: most confident (`YOLO_MAX_DET`): the load of a validation run, where a trained yolov5s at
#: 0.001 also sends thousands of boxes into NMS and keeps up to `max_det`. At 0.25 it is 213 to
#: 996 candidates and 42 to 194 kept, still more than a trained model's tens at 0.25 (random
#: scores are spread wide). m, l and x differ (median 6,754, 7,677 and 3,999 candidates at
#: 0.001, x from 112 to 8,220): random networks score arbitrarily, so the pipeline records the
#: candidate and kept counts of every image.
YOLO_CONF_THRESHOLD = 0.001
#: NMS's IoU threshold: YOLOv5's detect.py and val.py --task speed.
YOLO_IOU_THRESHOLD = 0.45
#: Detections kept per image at most (YOLOv5's and ultralytics' default).
YOLO_MAX_DET = 300
#: Candidates sent into NMS at most per image, the most confident first (YOLOv5's max_nms).
YOLO_MAX_NMS = 30000
#: YOLOv5's letterbox padding grey.
PAD_VALUE = 114
#: Variables set before ultralytics is imported. YOLO_OFFLINE stops its connectivity check (DNS
#: look-ups of public resolvers at import) and everything gated on it (telemetry, error reports,
#: update checks, downloads); YOLO_AUTOINSTALL=false stops it pip-installing packages it misses.
OFFLINE_ENVIRONMENT = {"YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false"}


def import_ultralytics() -> ModuleType:
    """Import ultralytics offline, leaving the process's thread settings as they were.

    ultralytics sets OMP_NUM_THREADS=1 when it is unset and calls cv2.setNumThreads(0) at
    import (and torch.set_num_threads in some of its functions, which we do not call): the
    variable, torch's thread count and, when OpenCV was already loaded, its thread count are put
    back afterwards. Its settings file (~/.config/Ultralytics, or $YOLO_CONFIG_DIR) is written
    as usual; its `sync` setting is turned off for this process only.
    """
    if "ultralytics" in sys.modules:
        return sys.modules["ultralytics"]
    os.environ.update(OFFLINE_ENVIRONMENT)  # before the import, and kept: later checks read it too
    os.environ.setdefault("YOLO_VERBOSE", "false")  # no model tables on stdout
    try:
        with threads_kept():
            import ultralytics
            import ultralytics.nn.tasks  # DetectionModel, imported under the same guard
            from ultralytics.utils import SETTINGS
    except ImportError as exc:
        raise WorkloadError(f"YOLO models need the optional `ultralytics` package (AGPL-3.0): `{YOLO_INSTALL}` "
                            f"({exc})") from None
    dict.__setitem__(SETTINGS, "sync", False)  # in memory only: the user's settings file is left alone
    return ultralytics


@contextlib.contextmanager
def threads_kept() -> Iterator[None]:
    """Put OMP_NUM_THREADS, torch's thread count and OpenCV's (if loaded) back as they were."""
    omp = os.environ.get("OMP_NUM_THREADS")
    torch_threads = torch.get_num_threads()
    cv2 = sys.modules.get("cv2")
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    try:
        yield
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
        if cv2 is not None and cv2_threads is not None:
            cv2.setNumThreads(cv2_threads)


def variant(name: str) -> str:
    """The ultralytics architecture built for a zoo name: yolov5s -> yolov5su (anchor-free)."""
    if name not in YOLO_MODELS:
        raise WorkloadError(f"{name!r} is not a YOLO model; YOLO models: {', '.join(YOLO_MODELS)}")
    return f"{name}u"


def weights_source(name: str, config: dict[str, Any] | None = None) -> str:
    """What a YOLO model was built from, in words (results record it as `weights_source`)."""
    version = import_ultralytics().__version__
    overrides = f", config overrides {config}" if config else ""
    return (f"random weights, ultralytics {version} {variant(name)} architecture (anchor-free 'u' variant, not the "
            f"original anchor-based YOLOv5), built with a fixed seed{overrides}; BatchNorm statistics from noise "
            "images, Conv and BatchNorm fused")


class YoloDetector(torch.nn.Module):
    """An ultralytics DetectionModel whose forward returns one tensor.

    forward(images: float [B, 3, S, S]) -> raw predictions [B, 4 + nc, A]: per anchor point the
    box (cx, cy, w, h in input pixels) then nc sigmoid class scores; nc = 80 and A = 8400 at
    S = 640. (In eval mode ultralytics returns (predictions, per-level head outputs).)
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return out[0] if isinstance(out, (tuple, list)) else out


def build(name: str, config: dict[str, Any] | None = None) -> YoloDetector:
    """The YOLO model `name` with random weights (from torch's current seed), in eval mode, on the CPU.

    `config` overrides top-level keys of the architecture definition, e.g. {"nc": 20}.
    """
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    with threads_kept():
        definition = yaml_model_load(f"{variant(name)[:-1]}.yaml")  # yolov5s.yaml: yolov5.yaml at scale s
        unknown = sorted(set(config or {}) - set(definition))
        if unknown:
            raise WorkloadError(f"{name}: unknown `config` keys {unknown}; the architecture definition has "
                                f"{sorted(k for k in definition if k not in ('backbone', 'head'))}")
        model = DetectionModel({**definition, **(config or {})}, verbose=False)
        _set_batchnorm_statistics(model)
        model.fuse(verbose=False)
    return YoloDetector(model).eval()


def _set_batchnorm_statistics(model: torch.nn.Module) -> None:
    # One training-mode pass over noise images at 320 px; momentum None makes each BatchNorm's
    # running statistics the plain average of what it saw.
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    images = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        model(images)
    model.eval()


def letterbox(images_uint8_hwc: list[np.ndarray] | torch.Tensor, size: int) -> torch.Tensor:
    """RGB uint8 images [H, W, 3] (a list, or a tensor [B, H, W, 3]) -> float [B, 3, size, size] in 0..1.

    YOLOv5's letterbox without stride rounding (auto=False): each image is scaled by
    min(size/H, size/W), so its long side becomes `size`, with bilinear interpolation
    (cv2.INTER_LINEAR's sampling; the resized pixels are not rounded to uint8), then padded
    evenly to size x size with grey 114, and divided by 255. A tensor stays on its device, so
    pre-processing runs where the caller put the images; numpy arrays are read on the CPU.
    """
    if isinstance(images_uint8_hwc, torch.Tensor):
        if images_uint8_hwc.ndim != 4 or images_uint8_hwc.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [B, H, W, 3], got shape {tuple(images_uint8_hwc.shape)}")
        return _letterbox_same_size(images_uint8_hwc, size)
    return torch.cat([_letterbox_same_size(torch.as_tensor(image).unsqueeze(0), size) for image in images_uint8_hwc])


def _letterbox_same_size(batch: torch.Tensor, size: int) -> torch.Tensor:
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [H, W, 3], got shape {tuple(batch.shape[1:])}")
    height, width = batch.shape[1:3]
    ratio = min(size / height, size / width)
    new_h, new_w = round(height * ratio), round(width * ratio)
    pixels = batch.permute(0, 3, 1, 2).float()
    if (new_h, new_w) != (height, width):
        pixels = torch.nn.functional.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top = round((size - new_h) / 2 - 0.1)
    left = round((size - new_w) / 2 - 0.1)
    out = torch.full((batch.shape[0], 3, size, size), float(PAD_VALUE), device=batch.device)
    out[:, :, top:top + new_h, left:left + new_w] = pixels
    return out.div_(255.0)


def nms(predictions: torch.Tensor, conf_threshold: float, iou_threshold: float = YOLO_IOU_THRESHOLD,
        max_det: int = YOLO_MAX_DET) -> tuple[list[torch.Tensor], list[int], list[int]]:
    """Detections per image from raw predictions [B, 4 + nc, A] (`YoloDetector`'s output).

    Per image: each anchor point's best class (one label per box, as YOLOv5's detect.py) is a
    candidate when its score exceeds `conf_threshold`; at most `YOLO_MAX_NMS` of the most
    confident go into `torchvision.ops.batched_nms` (per-class NMS), boxes converted from
    (cx, cy, w, h) to (x1, y1, x2, y2); the `max_det` most confident survivors are kept.

    Returns (detections, candidates, kept): per image a tensor [N, 6] of (x1, y1, x2, y2, conf,
    class) on the predictions' device, the number of candidates that went into NMS, and N.
    """
    from torchvision.ops import batched_nms, box_convert

    detections: list[torch.Tensor] = []
    candidates: list[int] = []
    kept: list[int] = []
    for image in predictions.float():  # [4 + nc, A]; fp16/bf16 outputs are compared in fp32
        scores, classes = image[4:].max(0)
        chosen = (scores > conf_threshold).nonzero().squeeze(1)
        if chosen.numel() > YOLO_MAX_NMS:
            chosen = chosen[scores[chosen].topk(YOLO_MAX_NMS).indices]
        boxes = box_convert(image[:4, chosen].T, "cxcywh", "xyxy")
        score, label = scores[chosen], classes[chosen]
        keep = batched_nms(boxes, score, label, iou_threshold)[:max_det]
        detections.append(torch.cat([boxes[keep], score[keep, None], label[keep, None].float()], 1))
        candidates.append(int(chosen.numel()))
        kept.append(int(keep.numel()))
    return detections, candidates, kept
