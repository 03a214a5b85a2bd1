"""What consecutive grid points share, kept while they share it: caches that nest.

A model holds its workloads (one per precision) and its fp32 reference outputs; a
workload holds its inputs and prepared artifacts (per batch size) and eager's outputs
on the gate's batches. Each level keeps one key at a time (or, with `keep_all`, every
key until cleared: a block's inputs and artifacts while its points' trials take turns),
and dropping a value drops what it holds first: a new model releases the old one's
workloads, inputs and artifacts, in that order, before it is loaded.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Level:
    """Values kept by key, with the levels nested under them."""

    def __init__(self, *children: Level, keep_all: bool = False) -> None:
        self.children = children
        self.keep_all = keep_all
        self.values: dict[Any, Any] = {}

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        """The value of `key`, built (after dropping the others, unless `keep_all`) when missing."""
        if key not in self.values:
            if not self.keep_all:
                self.clear()
            self.values[key] = build()
        return self.values[key]

    def __contains__(self, key: Any) -> bool:
        return key in self.values

    def clear(self) -> None:
        """Drop every value, and first everything nested under them."""
        for child in self.children:
            child.clear()
        self.values.clear()
