"""defect_judge/report/learning_curve.py: the learning curve drawn from a Trainer's log history."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from defect_judge.report.learning_curve import curve_points, learning_curve_chart, learning_curve_figure

# What trainer_state.json's log_history looks like: training logs, evaluations, the final summary.
HISTORY = [
    {"step": 1, "epoch": 0.1, "loss": 2.5, "learning_rate": 1e-4, "grad_norm": 3.0},
    {"step": 2, "epoch": 0.2, "loss": 2.0, "learning_rate": 1e-4},
    {"step": 2, "epoch": 0.2, "eval_loss": 1.9, "eval_judgement_accuracy": 0.5, "eval_accuracy_then_loss": 0.48},
    {"step": 3, "epoch": 0.3, "loss": 1.6},
    {"step": 4, "epoch": 0.4, "loss": 1.2},
    {"step": 4, "epoch": 0.4, "eval_loss": 1.7, "eval_judgement_accuracy": 0.75, "eval_accuracy_then_loss": 0.73},
    {"step": 4, "epoch": 0.4, "train_runtime": 12.0, "train_loss": 1.8, "total_flos": 1.0},
]


def lines_by_label(fig) -> dict[str, list[tuple[float, float]]]:
    found = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            found[line.get_label()] = list(zip(map(float, line.get_xdata()), map(float, line.get_ydata())))
    return found


def test_curve_points_take_each_key_in_step_order():
    assert curve_points(HISTORY, "loss") == [(1, 2.5), (2, 2.0), (3, 1.6), (4, 1.2)]  # train_loss is not loss
    assert curve_points(HISTORY, "eval_judgement_accuracy") == [(2, 0.5), (4, 0.75)]
    assert curve_points(list(reversed(HISTORY)), "eval_loss") == [(2, 1.9), (4, 1.7)]


def test_figure_has_every_point_of_the_history_and_marks_the_chosen_step():
    lines = lines_by_label(learning_curve_figure(HISTORY, best_step=4, title="run"))
    assert lines["train loss"] == [(1, 2.5), (2, 2.0), (3, 1.6), (4, 1.2)]
    assert lines["eval loss"] == [(2, 1.9), (4, 1.7)]
    assert lines["eval judgement accuracy"] == [(2, 0.5), (4, 0.75)]
    marks = lines["chosen checkpoint (step 4)"]
    assert {x for x, _ in marks} == {4.0}


def test_a_run_with_a_verdict_head_shows_the_heads_accuracy_it_selects_on():
    with_head = [dict(e, eval_head_accuracy=a) if "eval_loss" in e else e
                 for e, a in zip(HISTORY, (None, None, 0.625, None, None, 0.75, None))]
    lines = lines_by_label(learning_curve_figure(with_head, best_step=4))
    assert lines["eval verdict-head accuracy"] == [(2, 0.625), (4, 0.75)]
    assert "eval verdict-head accuracy" not in lines_by_label(learning_curve_figure(HISTORY))


def test_chart_is_a_png_written_from_a_trainer_state(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"log_history": HISTORY}))
    path = tmp_path / "learning_curve.png"
    learning_curve_chart(path, json.loads(state.read_text())["log_history"], best_step=2)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 600
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_empty_history_is_an_error_not_an_empty_chart(tmp_path):
    with pytest.raises(ValueError, match="no loss values"):
        learning_curve_chart(tmp_path / "c.png", [{"step": 0, "train_runtime": 1.0}])
    assert not (tmp_path / "c.png").exists()
