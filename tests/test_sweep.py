"""instruct_fine_tuning/sweep.py and defect_judge/train/recipes.py: a real (tiny) sweep through the launcher."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from PIL import Image

from defect_judge.train.recipes import RECIPES, Recipe
from helpers import CONVERT, PYTHON, REPO_ROOT, run_script

SWEEP = REPO_ROOT / "instruct_fine_tuning" / "sweep.py"


def twin_split(folder: Path, pairs_per_file: int = 6) -> Path:
    """The first twin pairs of two shipped subtype files, converted and split by the real converter."""
    raw = folder / "raw"
    raw.mkdir(parents=True)
    for name in ("null_pointer_dereference.json", "division_by_zero.json"):
        samples = json.loads((REPO_ROOT / "dataset" / "output" / name).read_text(encoding="utf-8"))
        pairs = sorted({s["pair_id"] for s in samples})[:pairs_per_file]
        (raw / name).write_text(json.dumps([s for s in samples if s["pair_id"] in pairs], ensure_ascii=False),
                                encoding="utf-8")
    data = folder / "data"
    run_script(CONVERT, "--input_dir", raw, "--converted_file", data / "all.jsonl", "--train_file",
               data / "train.jsonl", "--test_file", data / "test.jsonl", "--dev_ratio", "0.2", check=True)
    return data


def test_recipe_as_shell_assignments_and_training_items(tmp_path):
    recipe = RECIPES["judgement_pairs"]
    assert recipe.training_items(["a", "a", "b", "b", None]) == 3  # two pairs and a lone sample
    assert RECIPES["demo"].training_items(["a", "a", None]) == 3
    data = twin_split(tmp_path)
    printed = run_script(PYTHON, "-m", "defect_judge.train.recipes", "judgement_pairs", "--train_data",
                         data / "train.jsonl", check=True).stdout
    values = dict(line.split("=", 1) for line in printed.splitlines())
    train_pairs = {json.loads(line)["pair_id"] for line in (data / "train.jsonl").read_text().splitlines()}
    assert values["SAVE_STEPS"] == str(recipe.save_steps(len(train_pairs)))
    assert values["LEARNING_RATE"] == "0.0005" and "--pair_batches true" in values["TRAIN_ARGS"]
    assert "--train_on judgement" in values["TRAIN_ARGS"]
    # the assignments are valid bash: TRAIN_ARGS becomes an array
    echoed = subprocess.run(["bash", "-c", 'eval "$1"; printf "%s|" "${TRAIN_ARGS[@]}"', "_", printed],
                            capture_output=True, text=True, check=True).stdout
    assert echoed.split("|")[:2] == ["--finetuning_type", "lora"]


def test_save_steps_follow_the_evaluations_per_epoch():
    recipe = Recipe("r", "test", batch_size=1, gradient_accumulation_steps=4, evals_per_epoch=2)
    assert recipe.steps_per_epoch(224) == 56 and recipe.save_steps(224) == 28
    assert recipe.steps_per_epoch(3) == 1 and recipe.save_steps(3) == 1


def test_ranks_shorten_the_epoch_and_a_bad_num_gpus_is_one_line(tmp_path):
    recipe = Recipe("r", "test", batch_size=1, gradient_accumulation_steps=4)
    assert recipe.steps_per_epoch(224, ranks=8) == 7 and recipe.save_steps(224, ranks=8) == 4
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
