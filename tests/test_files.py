"""Tables appended per trial: every record exactly once, in the order the trials ran, whenever a kill
comes; a trial's write does not touch what came before; the sweep's summary is the records' summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchlib.derive.summary import summary_table
from benchlib.errors import InputError
from benchlib.files import append_part, join_parts, parts_folder, read_table_parts, table_exists
from benchlib.measure.sweep import run_sweep
from benchlib.params import parse_params
from benchlib.results import RunWriter, read_accuracy, read_env, read_records, read_summary
from benchlib.derive.efficiency import Ceilings
from tests.helpers import tiny_params


def trial(point: int, trial: int, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"point": point, "trial": trial, "seq": range(n), "latency": [point + trial / 10] * n})


def test_parts_read_back_in_the_order_written_and_join_into_one_file(tmp_path: Path) -> None:
    table = tmp_path / "records.parquet"
    assert not table_exists(table)
    written = [trial(0, 0), trial(1, 0), trial(0, 1), trial(1, 1)]  # interleaved, as trials run
    for order, frame in enumerate(written):
        append_part(table, frame, order, int(frame["point"][0]), int(frame["trial"][0]))
    expected = pd.concat(written, ignore_index=True)
    assert table_exists(table) and not table.exists()
    pd.testing.assert_frame_equal(read_table_parts(table), expected)
    join_parts(table)
    assert table.is_file() and not parts_folder(table).exists()
    pd.testing.assert_frame_equal(read_table_parts(table), expected)


def test_a_kill_between_joining_and_removing_the_parts_leaves_no_duplicate(tmp_path: Path) -> None:
    table = tmp_path / "records.parquet"
    for order, (p, t) in enumerate([(0, 0), (1, 0)]):
        append_part(table, trial(p, t), order, p, t)
    read_table_parts(table).to_parquet(table, index=False)  # joined, parts not yet removed
    append_part(table, trial(2, 0), 2, 2, 0)  # a later writer's new part
    records = read_table_parts(table)
    assert list(zip(records["point"], records["trial"])).count((0, 0)) == 3  # once: 3 rows of one trial
    assert records.groupby(["point", "trial"]).size().to_dict() == {(0, 0): 3, (1, 0): 3, (2, 0): 3}


def test_a_writer_refused_at_the_door_leaves_the_parts_alone(tiny_run, tmp_path: Path) -> None:
    run = tiny_run.copy_to(tmp_path).folder
    records = read_records(run)
    # As a kill leaves it: the joined file gone, the records in parts.
    table = run / "records.parquet"
    for order, ((p, t), frame) in enumerate(records.groupby(["point", "trial"], sort=False)):
        append_part(table, frame, order, int(p), int(t))
    table.unlink()
    before = sorted(q.name for q in parts_folder(table).iterdir())
    with pytest.raises(InputError, match="already holds a run"):
        RunWriter(run, read_env(run)["fingerprint"])
    assert sorted(q.name for q in parts_folder(table).iterdir()) == before and not table.exists()
    pd.testing.assert_frame_equal(read_records(run), records)


@pytest.mark.slow
def test_the_sweeps_summary_is_the_summary_of_its_records(tmp_path: Path) -> None:
    """Each point's row is derived from its own records: together they are what the whole run's records give."""
    params = parse_params(tiny_params(precisions=["fp32", "bf16"], runtimes=["eager", "trace"], batch_sizes=[1, 2],
                                      duration_s=0.02, repeats=2))  # accuracy rows and gates joined per point
    result = run_sweep(params, tmp_path / "run", progress=None)
    env = read_env(tmp_path / "run")
    whole = summary_table(read_records(tmp_path / "run"), read_accuracy(tmp_path / "run"), 0.5,
                          Ceilings.from_env(env))
    pd.testing.assert_frame_equal(result.summary.reset_index(drop=True), whole, check_dtype=False)
    assert len(read_summary(tmp_path / "run")) == 8 and result.summary["accuracy_gate"].notna().any()
    assert not (tmp_path / "run" / "records").exists()  # joined when the run closed
    shutil.rmtree(tmp_path / "run")
