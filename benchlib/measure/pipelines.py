"""Pipelines: a model's whole request path on raw input, timed by stage (``pipeline: true``).

A :class:`Pipeline` is built for one workload (model, precision, device) at one batch
size, before any timing: its raw inputs are made on the CPU, as a server receives them
(a few batches, cycled through, so tokenisation and NMS see varied inputs). Each request
then runs three stages, and the client reads the point's clock at their boundaries::

    t0 = clock()
    inputs, context = preprocess(raw)       # raw -> the model's tensors on the device (transfer included)
    [stream.synchronize()]                  # CUDA: the client's own stream only
    t1 = clock()
    outputs = forward(inputs)               # the runtime's call (eager, trace, onnxruntime on CPU)
    [stream.synchronize()]
    t2 = clock()
    answers = postprocess(outputs, context) # outputs -> answers on the CPU, as a server returns them
    [stream.synchronize()]
    t3 = clock()
    return StageTimes(t0, t1, t2, t3, boxes)  # start = t0, end = t3: the stages sum to the latency

**The cost of the boundaries on CUDA.** Each stage ends with a synchronize of the client's
stream (never the device: other clients' streams run on), so the host cannot queue the
next stage's kernels while the previous stage's still run: a request loses that overlap
at two boundaries, plus a few microseconds per synchronize. Post-processing ends with a
copy to the CPU, which waits for the stream anyway. A pipeline's total is therefore a
little above what an unsynchronised server would see; the forward pass alone is timed
without them (a point without ``pipeline``).

**Where each stage runs** (what a real server does):

- *Vision* (torchvision models, the zoo's resnet50): raw uint8 HWC images, 640x480,
  seeded noise (resizing costs the same whatever the pixels). Pre-processing runs on the
  model's device: the uint8 images are moved first (a quarter of float32's bytes), then
  resized (shorter side to ``round(image_size / 0.875)``, bilinear, antialiased), centre-
  cropped to ``image_size``, scaled to [0, 1] and normalised with ImageNet's mean and std
  (torchvision.transforms.v2.functional, on tensors). Post-processing: softmax and top-5
  on the device, indices and probabilities moved to the CPU.
- *BERT QA* (the zoo's BERTs, ``hf:`` question-answering models): a question and a context
  per sample, English-like text from a word list, seeded; contexts are long enough that
  some are truncated at ``seq_len``. Tokenisation runs on the CPU (it is string work;
  the ``tokenizers`` library's ``encode_batch``, on its own thread pool), padded or
  truncated (context only) to ``seq_len``, then the token tensors are moved. Post-
  processing: the best span (start + end logit, end >= start, at most
  :data:`MAX_ANSWER_TOKENS` tokens, inside the context) on the device, its indices moved
  to the CPU and the answer cut from the context through the token offsets.
- *Other* ``hf:`` *text models*: tokenise (one text per sample) and forward; post-
  processing is a masked mean over the tokens of the first output (a sentence embedding,
  as sentence-transformers serves MiniLM), moved to the CPU.
- *YOLO*: raw uint8 HWC 640x480 images moved to the device, ``letterbox`` to
  ``image_size`` (benchlib.measure.yolo, on the tensors' device), forward, ``nms`` at
  ``YOLO_CONF_THRESHOLD``; the record keeps the candidate and kept boxes per image.

**Tokenizer.** The zoo's BERTs use the uncased BERT WordPiece vocabulary (30,522 tokens,
Apache-2.0, Google's BERT release). benchlib ships it as package data
(``benchlib/data/bert-uncased-vocab.txt``, from the all-MiniLM-L6-v2 checkpoint, which
uses the same vocabulary) and builds a fast BERT tokenizer from it with the ``tokenizers``
library (lower-casing, BERT pre-tokenisation, WordPiece, [CLS]/[SEP]): offline, no hub.
An ``hf:`` model whose local directory has its own ``tokenizer.json`` (or ``vocab.txt``)
uses that instead.

**Not supported** (the sweep marks the point ``unsupported`` and says why): open loop
(a worker merges requests into one batch, and queueing is part of the latency, so
stages could not sum to it), and runtimes that bind each client to fixed input buffers
(``cuda-graphs``, ``compile``, ``onnxruntime`` on CUDA); ``hf:`` image models.
"""
from __future__ import annotations

import functools
import importlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchlib.params_base import YOLO_MODELS

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from benchlib.measure.inputs import Inputs
    from benchlib.measure.workload import Workload

#: The raw images a server receives: height and width of a VGA camera frame.
RAW_HEIGHT, RAW_WIDTH = 480, 640
#: The share of the resized image the centre crop keeps (224 of 256, as torchvision's ImageNet recipe).
CROP_RATIO = 0.875
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOP_K = 5
#: The longest answer span, in tokens (Hugging Face's question-answering default).
MAX_ANSWER_TOKENS = 30
#: Raw batches a client cycles through: at most this many, and at most RAW_IMAGES samples in all.
RAW_BATCHES = 4
RAW_SAMPLES = 64
#: The uncased BERT WordPiece vocabulary, shipped as package data.
BERT_VOCAB = "bert-uncased-vocab.txt"
BERT_VOCAB_SIZE = 30522

#: Words the synthetic questions and contexts are made of (common English).
WORDS: tuple[str, ...] = tuple("""
the of and to in is was for on that with as by at from his her it an were are which this be has had
not first one their its new after who they have two been other also all into more time during only
city year years school world government national team university war music film state century
company river north south season area people later under part county known game album called
between population american house family during history public series second since members
league early local three based both including several while until being number group church
although village around most however record about over where these many station water region
system found large town small island building first released named western eastern king
country language power line used park center court final road work field club home life
""".split())
_QUESTION_WORDS = ("what", "which", "who", "when", "where", "how", "why")


class PipelineUnsupported(Exception):
    """This point cannot run its pipeline; the sweep records it as ``unsupported`` with this reason."""


@dataclass(frozen=True)
class Answers:
    """What post-processing returns: the answers (on the CPU) and a detector's boxes per image."""

    value: Any
    candidate_boxes: float = math.nan
    kept_boxes: float = math.nan


@dataclass
class Pipeline:
    """One workload's request path at one batch size: raw batches and the stages around the forward pass."""

    kind: str
    #: Raw batches on the CPU (images or text); client ``i`` starts at batch ``i`` and cycles.
    raw: list[Any]
    #: raw batch -> (the model's inputs on the device, what post-processing needs of the batch)
    preprocess: Callable[[Any], tuple[Inputs, Any]]
    #: (the forward's outputs, that context) -> answers on the CPU
    postprocess: Callable[[Any, Any], Answers]
    #: Where the stages run, and with what (the point's notes carry it).
    note: str = ""


def open_loop_reason() -> str:
    return ("pipeline: true runs in closed loop only: an open-loop worker merges requests into one batch and "
            "counts their queueing in the latency, so stages could not sum to it; drop `arrival` or `pipeline`")


def bound_runtime_reason(runtime: str) -> str:
    return (f"pipeline: true needs a runtime whose call takes each request's fresh inputs (eager, trace, "
            f"onnxruntime on CPU); {runtime} binds each client to fixed input buffers here")


def build_pipeline(workload: Workload, batch_size: int, seed: int) -> Pipeline:
    """The pipeline of `workload`'s model at `batch_size`, its raw inputs made with `seed`.

    Raises :class:`PipelineUnsupported` for a model whose raw input benchlib does not know.
    """
    loaded = workload.loaded
    spec = loaded.spec
    batches = max(1, min(RAW_BATCHES, RAW_SAMPLES // batch_size))
    if spec.name in YOLO_MODELS:
        return _yolo(workload, batch_size, batches, seed)
    if spec.kind == "torchvision" or spec.name == "resnet50":
        return _vision(workload, batch_size, batches, seed)
    if spec.kind in ("zoo", "hf"):
        if getattr(loaded.module, "main_input_name", "input_ids") != "input_ids":
            raise PipelineUnsupported(f"{spec.name}: no pipeline for Hugging Face image models yet (vision "
                                      "pipelines are built for torchvision models); remove `pipeline: true`")
        return _text(workload, batch_size, batches, seed)
    raise PipelineUnsupported(f"{spec.name}: benchlib knows no raw input for this model; remove `pipeline: true`")


# --- vision -------------------------------------------------------------------------


def raw_images(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A batch of raw uint8 HWC frames, RAW_HEIGHT x RAW_WIDTH, on the CPU."""
    return torch.randint(0, 256, (batch_size, RAW_HEIGHT, RAW_WIDTH, 3), dtype=torch.uint8, generator=generator)


def _vision(workload: Workload, batch_size: int, batches: int, seed: int) -> Pipeline:
    from torchvision.transforms.v2 import functional as F

    size = workload.loaded.spec.image_size
    resize = round(size / CROP_RATIO)
    device = workload.device
    generator = torch.Generator().manual_seed(seed)
    raw = [raw_images(batch_size, generator) for _ in range(batches)]

    def preprocess(images: torch.Tensor) -> tuple[Inputs, Any]:
        x = images.to(device).permute(0, 3, 1, 2)  # uint8 NCHW view of the HWC frames
        x = F.resize(x, [resize], antialias=True)
        x = F.center_crop(x, [size, size])
        x = F.to_dtype(x, torch.float32, scale=True)
        x = F.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
        return workload.to_device(x), None

    def postprocess(outputs: Any, _context: Any) -> Answers:
        logits = _first(outputs)
        if logits.dim() != 2:
            raise PipelineUnsupported(f"the vision pipeline expects class logits [batch, classes], got shape "
                                      f"{tuple(logits.shape)}")
        probs, indices = torch.softmax(logits.float(), dim=1).topk(min(TOP_K, logits.shape[1]), dim=1)
        return Answers((indices.cpu(), probs.cpu()))

    where = "GPU" if device.type == "cuda" else "CPU"
    note = (f"pipeline: {RAW_WIDTH}x{RAW_HEIGHT} uint8 images moved, resized to {resize}, cropped to {size} and "
            f"normalised on the {where}; softmax and top-{TOP_K} back to the CPU")
    return Pipeline("vision", raw, preprocess, postprocess, note)


# --- text -----------------------------------------------------------------------------


def raw_texts(batch_size: int, seq_len: int, rng: random.Random) -> list[tuple[str, str]]:
    """(question, context) pairs of English-like text; contexts of 0.4 to 1.3 x seq_len words,
    so the longer ones are truncated at `seq_len` tokens."""
    pairs = []
    for _ in range(batch_size):
        question = " ".join([rng.choice(_QUESTION_WORDS), *rng.choices(WORDS, k=rng.randint(4, 9))]) + "?"
        words = rng.choices(WORDS, k=max(4, int(seq_len * rng.uniform(0.4, 1.3))))
        sentences, start = [], 0
        while start < len(words):
            length = rng.randint(6, 16)
            chunk = words[start:start + length]
            sentences.append(" ".join([chunk[0].capitalize(), *chunk[1:]]) + ".")
            start += length
        pairs.append((question.capitalize(), " ".join(sentences)))
    return pairs


def bert_vocab_path() -> Path:
    """The shipped uncased BERT WordPiece vocabulary."""
    return Path(str(resources.files("benchlib") / "data" / BERT_VOCAB))


@functools.lru_cache(maxsize=8)
def _tokenizer_json(source: str) -> str:
    """A tokenizer as JSON (built once per source; each pipeline makes its own object from it)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    path = Path(source)
    if path.name == "tokenizer.json":
        return Tokenizer.from_file(str(path)).to_str()
    tokenizer = Tokenizer(models.WordPiece.from_file(str(path), unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer.to_str()


def text_tokenizer(workload: Workload, pairs: bool) -> tuple[Tokenizer, str]:
    """The model's own tokenizer when its local directory has one, else the shipped BERT vocabulary;
    padded to and truncated at seq_len (the context only, for pairs). Also says which it is."""
    from tokenizers import Tokenizer

    spec = workload.loaded.spec
    source, said = str(bert_vocab_path()), "the shipped uncased BERT WordPiece vocabulary"
    if spec.kind == "hf":
        directory = Path(spec.source if spec.weights == "pretrained" and spec.source else spec.target)
        for name in ("tokenizer.json", "vocab.txt"):
            if (directory / name).is_file():
                source, said = str(directory / name), f"the model's own {name}"
                break
    tokenizer = Tokenizer.from_str(_tokenizer_json(source))
    vocab_size = getattr(getattr(workload.loaded.module, "config", None), "vocab_size", None)
    if vocab_size is not None and tokenizer.get_vocab_size() > vocab_size:
        raise PipelineUnsupported(f"{spec.name}: its directory has no tokenizer, and its vocabulary ({vocab_size}) is "
                                  f"smaller than {said}'s ({tokenizer.get_vocab_size()}); give a local directory "
                                  "with its tokenizer.json")
    seq_len = spec.seq_len
    tokenizer.enable_truncation(max_length=seq_len, strategy="only_second" if pairs else "longest_first")
    pad = next((t for t in ("[PAD]", "<pad>") if tokenizer.token_to_id(t) is not None), None)
    if pad is None:
        tokenizer.enable_padding(length=seq_len)
    else:
        tokenizer.enable_padding(length=seq_len, pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    return tokenizer, said


def _text(workload: Workload, batch_size: int, batches: int, seed: int) -> Pipeline:
    loaded = workload.loaded
    qa = type(loaded.module).__name__.endswith("ForQuestionAnswering")
    tokenizer, said = text_tokenizer(workload, pairs=qa)
    seq_len = loaded.spec.seq_len
    keys = set(loaded.make_inputs(1, torch.Generator().manual_seed(seed)))  # what the model takes
    device = workload.device
    rng = random.Random(seed)
    raw = [raw_texts(batch_size, seq_len, rng) for _ in range(batches)]
    # Spans with end >= start and at most MAX_ANSWER_TOKENS tokens, made once on the device.
    rows = torch.arange(seq_len, device=device)
    width = rows.unsqueeze(0) - rows.unsqueeze(1)
    band = (width >= 0) & (width < MAX_ANSWER_TOKENS)

    def preprocess(batch: list[tuple[str, str]]) -> tuple[Inputs, Any]:
        encodings = tokenizer.encode_batch(batch if qa else [context for _, context in batch])
        tensors = {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
                   "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
                   "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long)}
        inputs = {k: v.to(device) for k, v in tensors.items() if k in keys}
        if qa:
            in_context = torch.tensor([[s == 1 for s in e.sequence_ids] for e in encodings]).to(device)
            return inputs, (in_context, encodings, batch)
        return inputs, inputs["attention_mask"]

    def answer_spans(outputs: Any, context: Any) -> Answers:
        in_context, encodings, batch = context
        start, end = _pair(outputs, "start_logits", "end_logits")
        low = torch.finfo(torch.float32).min
        start = start.float().masked_fill(~in_context, low)
        end = end.float().masked_fill(~in_context, low)
        scores = (start.unsqueeze(2) + end.unsqueeze(1)).masked_fill(~band, low)
        best = scores.flatten(1).argmax(dim=1).cpu().tolist()
        answers = []
        for flat, encoding, (_, text) in zip(best, encodings, batch, strict=True):
            first, last = divmod(flat, seq_len)
            answers.append((first, last, text[encoding.offsets[first][0]:encoding.offsets[last][1]]))
        return Answers(answers)

    def embeddings(outputs: Any, mask: Any) -> Answers:
        hidden = _first(outputs).float()
        if hidden.dim() == 3:
            weights = mask.unsqueeze(2).to(hidden.dtype)
            hidden = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return Answers(hidden.cpu())

    what = "the best answer span cut from the context" if qa else "a masked mean of the first output"
    where = "GPU" if device.type == "cuda" else "CPU"
    note = (f"pipeline: tokenised on the CPU with {said} to {seq_len} tokens (then on the {where}); "
            f"post-processing: {what} on the {where}, answers back to the CPU")
    return Pipeline("qa" if qa else "text", raw, preprocess, answer_spans if qa else embeddings, note)


# --- YOLO -------------------------------------------------------------------------


def _yolo(workload: Workload, batch_size: int, batches: int, seed: int) -> Pipeline:
    yolo = importlib.import_module("benchlib.measure.yolo")  # imports ultralytics: only for YOLO models
    size = workload.loaded.spec.image_size
    device = workload.device
    generator = torch.Generator().manual_seed(seed)
    raw = [raw_images(batch_size, generator) for _ in range(batches)]
    threshold = yolo.YOLO_CONF_THRESHOLD

    def preprocess(images: torch.Tensor) -> tuple[Inputs, Any]:
        return workload.to_device(yolo.letterbox(images.to(device), size).to(device)), None

    def postprocess(outputs: Any, _context: Any) -> Answers:
        predictions = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        kept, candidates, kept_counts = yolo.nms(predictions, threshold)
        boxes = [k.cpu() if isinstance(k, torch.Tensor) else k for k in kept]
        return Answers(boxes, _mean(candidates), _mean(kept_counts))

    note = (f"pipeline: {RAW_WIDTH}x{RAW_HEIGHT} uint8 images moved and letterboxed to {size} on the "
            f"{'GPU' if device.type == 'cuda' else 'CPU'}; NMS at confidence {threshold:g}, boxes back to the CPU")
    return Pipeline("yolo", raw, preprocess, postprocess, note)


def _mean(counts: Any) -> float:
    values = torch.as_tensor(counts if not isinstance(counts, list) else [float(c) for c in counts],
                             dtype=torch.float64)
    return float(values.mean()) if values.numel() else math.nan


def _first(outputs: Any) -> torch.Tensor:
    """The first output tensor of a forward (a tensor, a tuple from ONNX, a ModelOutput or a traced dict)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    return outputs[0]


def _pair(outputs: Any, first: str, second: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(outputs, dict):
        return outputs[first], outputs[second]
    return outputs[0], outputs[1]
