"""defect_judge/evaluate/partial.py: the partial results file a resumed evaluation reads back."""
from __future__ import annotations

import json

import pytest

from defect_judge.errors import InputError, RunError
from defect_judge.evaluate.partial import PartialWriter, load_finished, read_partial
from defect_judge.evaluate.results_folder import partial_file

FINGERPRINT = {"model": "m", "mode": "score"}


def written(tmp_path, rows: list[dict], rank: int = 0):
    path = partial_file(tmp_path, rank)
    with PartialWriter(path, FINGERPRINT) as writer:
        writer.append(rows)
    return path


def test_rows_come_back_and_a_torn_last_line_is_dropped_and_cut(tmp_path):
    path = written(tmp_path, [{"id": "a", "prediction": "是"}, {"id": "b", "prediction": "否"}])
    intact = path.stat().st_size
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "predic')  # a kill in the middle of a write
    rows, length = read_partial(path, FINGERPRINT)
    assert [row["id"] for row in rows] == ["a", "b"] and length == intact
    with PartialWriter(path, FINGERPRINT) as writer:
        writer.append([{"id": "c", "prediction": "是"}])
    assert sorted(load_finished(tmp_path, FINGERPRINT)) == ["a", "b", "c"]


def test_every_rank_file_of_the_folder_is_read(tmp_path):
    written(tmp_path, [{"id": "a"}])
    written(tmp_path, [{"id": "b"}], rank=1)
    assert sorted(load_finished(tmp_path, FINGERPRINT)) == ["a", "b"]


def test_other_settings_are_the_users_choice_a_broken_middle_is_a_failed_run(tmp_path):
    path = written(tmp_path, [{"id": "a"}])
    with pytest.raises(InputError, match="other settings"):
        read_partial(path, FINGERPRINT | {"mode": "generate"})
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0], "{broken", json.dumps({"id": "b"})]) + "\n", encoding="utf-8")
    with pytest.raises(RunError, match="broken line") as failure:
        read_partial(path, FINGERPRINT)
    assert failure.value.exit_code == 1 and failure.value.line == 2
