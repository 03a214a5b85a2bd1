"""Which open-loop configurations to set side by side: server-side merging against client-side batches.

A server can batch in two ways at the same load: clients send batches of b (`batch_size` b > 1,
no merging: `max_batch_size` 1), or clients send single requests that the server merges up to k
(`batch_size` 1, `max_batch_size` k > 1). Where a run measured both for one instance, model,
precision, runtime, worker count and arrival process, their highest rates within the budget
(benchlib.derive.capacity.max_rate_table) are compared, beside batch 1 without merging where it
ran. Configurations that batch on both sides are left out.
"""
from __future__ import annotations

import pandas as pd

from benchlib.schema import with_runtime

#: The kinds of batching compared, in the order shown.
NO_BATCHING, CLIENT_BATCHING, SERVER_BATCHING = "none", "client-side", "server-side"


def batching_pairs(max_rates: pd.DataFrame) -> pd.DataFrame:
    """The rows of `max_rates` (one per configuration) to compare, with their kind (`batching`), ordered by
    configuration, then none, client-side, server-side, each by its batch's size; empty when no pair ran."""
    if max_rates.empty:
        return max_rates
    table = with_runtime(max_rates)
    batch, merged = table["batch_size"].astype(int), table["max_batch_size"].astype(int)
    kind = pd.Series(None, index=table.index, dtype=object)
    kind[(batch == 1) & (merged == 1)] = NO_BATCHING
    kind[(batch > 1) & (merged == 1)] = CLIENT_BATCHING
    kind[(batch == 1) & (merged > 1)] = SERVER_BATCHING
    table = table.assign(batching=kind).dropna(subset=["batching"])
    group = [k for k in ["instance", "model", "precision", "runtime", "threads", "arrival"] if k in table.columns]
    both = table.groupby(group, dropna=False)["batching"].transform(
        lambda kinds: {CLIENT_BATCHING, SERVER_BATCHING} <= set(kinds))
    table = table[both.astype(bool)]
    order = {NO_BATCHING: 0, CLIENT_BATCHING: 1, SERVER_BATCHING: 2}
    table = table.assign(_order=table["batching"].map(order), _size=batch[table.index] * merged[table.index])
    return table.sort_values([*group, "_order", "_size"], kind="stable").drop(columns=["_order", "_size"])
