"""benchlib: reproducible inference benchmarks for PyTorch models.

Measures (throughput, latency) = f(batch size, client threads, precision) with
closed-loop client threads, keeps every request as a raw record, and derives
summaries from them. Start at :func:`benchlib.measure.sweep.run_sweep` or the ``benchlib``
command line.
"""
from __future__ import annotations

__version__ = "0.1.0"
