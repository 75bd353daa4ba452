"""instruct_fine_tuning/sweep.py: a real (tiny) sweep through the launcher. The recipes it runs are tested in
tests/train/test_recipes.py."""
from __future__ import annotations

import json

from PIL import Image

from helpers import REPO_ROOT, run_script, twin_split

SWEEP = REPO_ROOT / "instruct_fine_tuning" / "sweep.py"


def test_a_bad_num_gpus_is_one_line(tmp_path):
    out = tmp_path / "sweep"
    bad = run_script(SWEEP, "--output_dir", out, "--recipes", "demo", env={"NUM_GPUS": "two"})
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("NUM_GPUS must be a whole number, "
                                                                              "got 'two'")
    assert not out.exists()


def test_tiny_sweep_trains_scores_every_checkpoint_on_dev_and_resumes(tmp_path, tiny_model_dir):
    data = twin_split(tmp_path)
    out = tmp_path / "sweep"
    args = [SWEEP, "--model_path", tiny_model_dir, "--train_data", data / "train.jsonl", "--eval_data",
            data / "dev.jsonl", "--output_dir", out, "--recipes", "judgement_pairs", "--epochs", "1",
            "--evals_per_epoch", "2"]
    first = run_script(*args, env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((out / "sweep_results.json").read_text(encoding="utf-8"))
    (result,) = summary["recipes"]
    assert result["recipe"] == "judgement_pairs" and len(result["curve"]) == 2
    dev_size = len((data / "dev.jsonl").read_text().splitlines())
    for point in result["curve"]:
        scored = json.loads((out / "judgement_pairs" / f"dev-{point['step']}" / "evaluation_results.json")
                            .read_text(encoding="utf-8"))
        assert scored["mode"] == "score" and scored["overall"]["total"] == dev_size
        assert point["accuracy"] == scored["overall"]["accuracy"] and point["roc_auc"] == scored["roc_auc"]
    assert [p["epoch"] for p in result["curve"]] == [0.5, 1.0]
    assert summary["reference"]["majority"] == 0.5 and summary["reference"]["baseline"]["accuracy"] >= 0
    table = (out / "sweep.md").read_text(encoding="utf-8")
    assert "`judgement_pairs`" in table and "epoch 0.5" in table and "Majority class on dev: 0.50" in table
    with Image.open(out / "sweep_curves.png") as png:
        assert png.width >= 800
    assert (out / "judgement_pairs" / "train" / "learning_curve.png").is_file()
    assert not list((out / "judgement_pairs" / "train").glob("checkpoint-*"))  # scored, then removed
    # a second run finds the recipe done and trains nothing
    again = run_script(*args, check=True)
    assert "already done" in again.stderr


def test_help_states_each_default_once():
    text = run_script(SWEEP, "--help", check=True).stdout
    for block in text.split("\n  --")[1:]:
        assert block.count("default") <= 1, block


def test_a_linear_probe_recipe_is_scored_once_with_its_head(tmp_path, tiny_model_dir):
    """probe_mid fits a verdict head and trains nothing: its OUTPUT_DIR is scored on dev at epoch 0, by the head,
    with what the model alone scores beside it."""
    data = twin_split(tmp_path)
    out = tmp_path / "sweep"
    result = run_script(SWEEP, "--model_path", tiny_model_dir, "--train_data", data / "train.jsonl", "--eval_data",
                        data / "dev.jsonl", "--output_dir", out, "--recipes", "probe_mid", "--baseline", "false",
                        env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fitting the verdict head mean@0.5 on the frozen model" in result.stderr
    (recipe,) = json.loads((out / "sweep_results.json").read_text(encoding="utf-8"))["recipes"]
    (point,) = recipe["curve"]
    assert point["step"] == 0 and point["epoch"] == 0 and point["verdict_source"] == "head"
    assert point["model_alone"] is not None and 0 <= point["accuracy"] <= 1
    assert (out / "probe_mid" / "train" / "verdict_head.json").is_file()
    assert not list((out / "probe_mid" / "train").glob("checkpoint-*"))
