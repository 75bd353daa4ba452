"""defect_judge/train/recipes.py: the named recipes as the launcher's settings and train_lora.py's flags (every one
parsed by train_lora.py's own parser, what it leaves unset the launcher's defaults), as shell lines bash evaluates,
the checkpoint interval they imply (evaluations per epoch, ranks, twin pairs) and SAVE_STEPS=auto's half epoch."""
from __future__ import annotations

import json
import os
import subprocess
from enum import Enum

import pytest

from defect_judge.train.arguments import LAUNCHER_PATHS, parse_args
from defect_judge.train.launcher_settings import launcher_settings
from defect_judge.train.recipes import FLAG_FIELDS, LAUNCHER_FIELDS, RECIPES, Recipe, half_epoch_save_steps
from helpers import PYTHON, REPO_ROOT, make_records, planted, run_script, twin_split, write_records


def test_recipe_as_shell_assignments_and_training_items(tmp_path):
    recipe = RECIPES["judgement_pairs"]
    assert recipe.training_items(["a", "a", "b", "b", None]) == 3  # two pairs and a lone sample
    assert RECIPES["demo"].training_items(["a", "a", None]) == 3
    data = twin_split(tmp_path)
    printed = run_script(PYTHON, "-m", "defect_judge.train.recipes", "judgement_pairs", "--train_data",
                         data / "train.jsonl", check=True).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
    train_pairs = {json.loads(line)["pair_id"] for line in (data / "train.jsonl").read_text().splitlines()}
    assert values["SAVE_STEPS"] == str(recipe.save_steps(len(train_pairs)))
    assert values["LEARNING_RATE"] == "0.0005" and "--pair_batches true" in values["TRAIN_ARGS"]
    assert "--train_on judgement" in values["TRAIN_ARGS"]
    # the assignments are valid bash: TRAIN_ARGS becomes an array
    echoed = subprocess.run(["bash", "-c", 'eval "$1"; printf "%s|" "${TRAIN_ARGS[@]}"', "_", printed],
                            capture_output=True, text=True, check=True).stdout
    assert echoed.split("|")[:2] == ["--warmup_steps", "0.05"]
    assert "LORA_RANK" not in values  # the launcher's default, not set by the recipe
    exported = subprocess.run(["bash", "-c", 'eval "$1"; bash -c \'echo "$LEARNING_RATE"\'', "_", printed],
                              capture_output=True, text=True, check=True).stdout
    assert exported.strip() == "0.0005"  # the launcher, a child process, sees the recipe's settings


def test_save_steps_follow_the_evaluations_per_epoch():
    recipe = Recipe("r", "test", per_device_train_batch_size=1, gradient_accumulation_steps=4, evals_per_epoch=2)
    assert recipe.steps_per_epoch(224) == 56 and recipe.save_steps(224) == 28
    assert recipe.steps_per_epoch(3) == 1 and recipe.save_steps(3) == 1


def test_ranks_shorten_the_epoch():
    recipe = Recipe("r", "test", gradient_accumulation_steps=4)  # the launcher's batch size, 1
    assert recipe.steps_per_epoch(224, ranks=8) == 7 and recipe.save_steps(224, ranks=8) == 4


# ------------------------------------------------ every recipe, as train_lora.py parses it

REQUIRED = ["--model_path", "m", "--train_data", "t", "--report_to", "none", "--eval_strategy", "no"]


def same(got, expected) -> bool:
    """A parsed value equals the recipe's, or the launcher's text (3e-5, 32, linear, true)."""
    got = got.value if isinstance(got, Enum) else got
    if isinstance(got, bool):
        return got == (expected is True or expected == "true")
    if isinstance(got, (int, float)):
        return float(got) == float(expected)
    return got == expected


def parsed_value(parsed: tuple, flag: str):
    return getattr(next(group for group in parsed if hasattr(group, flag)), flag)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_flags_train_lora_accepts_with_the_launchers_defaults_where_unset(name, tmp_path):
    """The recipe's launcher settings become the flags the launcher passes them as, then its own flags: parsed,
    each has the recipe's value, and each setting the recipe leaves unset the launcher's default."""
    recipe, settings = RECIPES[name], launcher_settings()
    env = recipe.launcher_env()
    assert set(env) <= set(settings) and all(settings[key].flag for key in env), env
    argv = [arg for key, value in env.items() for arg in (f"--{settings[key].flag}", value)]
    parsed = parse_args(REQUIRED + ["--output_dir", str(tmp_path / "out"), *argv, *recipe.train_args()])
    for field in LAUNCHER_FIELDS:
        setting = settings[field.upper()]
        assert setting.flag and setting.flag not in LAUNCHER_PATHS, setting
        value = getattr(recipe, field)
        expected = setting.default if value is None else value
        assert same(parsed_value(parsed, setting.flag), expected), (field, expected)
    for field in FLAG_FIELDS:
        value = getattr(recipe, field)
        if value is not None:  # None: train_lora.py's own default, which the recipe does not change
            assert same(parsed_value(parsed, field), value), (field, value)
    extra = list(recipe.extra_args)
    for flag, value in zip(extra[::2], extra[1::2]):
        assert flag.startswith("--") and not value.startswith("--"), extra
        assert same(parsed_value(parsed, flag.removeprefix("--")), value), (flag, value)


def test_settings_a_recipe_leaves_unset_are_neither_exported_nor_passed():
    recipe = RECIPES["demo"]
    assert (recipe.scheduler, recipe.lora_rank, recipe.finetuning_type, recipe.key_token_weight) == (None,) * 4
    assert not {"SCHEDULER", "LORA_RANK", "LORA_ALPHA", "PER_DEVICE_TRAIN_BATCH_SIZE", "VERDICT_HEAD",
                "SAVE_STEPS"} & set(recipe.launcher_env())
    assert not {"--finetuning_type", "--key_token_weight", "--pair_batches"} & set(recipe.train_args())
    assert recipe.launcher_env(10)["SAVE_STEPS"] == str(recipe.save_steps(10))
    assert RECIPES["judgement_single"].launcher_env()["PER_DEVICE_TRAIN_BATCH_SIZE"] == "2"
    assert not RECIPES["probe_mid"].fine_tunes and RECIPES["demo"].fine_tunes


# ------------------------------------------------ the printed shell lines, evaluated by bash

EVALUATED = """\
eval "$("$PYTHON" -m defect_judge.train.recipes "$1")"
env -0
printf '\\1'
printf '%s\\0' "${TRAIN_ARGS[@]}"
"""


def evaluated(name: str) -> tuple[dict[str, str], list[str]]:
    """The launcher's settings (and SAVE_STEPS) a bash exports after evaluating the recipe's printed lines, in an
    environment without them, and its TRAIN_ARGS array."""
    names = set(launcher_settings()) | {"SAVE_STEPS"}
    env = {key: value for key, value in os.environ.items() if key not in names | {"TRAIN_ARGS"}} | {"PYTHON": PYTHON}
    result = subprocess.run(["bash", "-c", EVALUATED, "_", name], cwd=REPO_ROOT, env=env, capture_output=True,
                            check=True)
    environment, arguments = result.stdout.decode("utf-8").split("\1")
    exported = dict(item.split("=", 1) for item in environment.split("\0") if item)
    return {key: value for key, value in exported.items() if key in names}, arguments.split("\0")[:-1]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_bash_exports_the_launcher_settings_and_holds_the_flags_as_an_array(name):
    recipe = RECIPES[name]
    exported, train_args = evaluated(name)
    assert exported == recipe.launcher_env()
    assert train_args == recipe.train_args()


def test_an_unknown_recipe_is_one_line():
    result = run_script(PYTHON, "-m", "defect_judge.train.recipes", "no_such_recipe")
    assert result.returncode == 2 and result.stdout == ""
    assert "invalid choice: 'no_such_recipe'" in result.stderr.strip().splitlines()[-1]


# ------------------------------------------------ SAVE_STEPS=auto

@pytest.fixture(scope="module")
def six_pairs_and_two_lone(tmp_path_factory):
    """14 training records: six twin pairs (pair_id p0..p5) and two records without a pair_id."""
    rows = [r.to_json() for r in planted(12, seed=0)] + make_records(2)
    assert len({r["pair_id"] for r in rows if "pair_id" in r}) == 6 and sum("pair_id" not in r for r in rows) == 2
    return str(write_records(tmp_path_factory.mktemp("auto") / "train.jsonl", rows))


@pytest.mark.parametrize("flags", [[], ["--train_on", "judgement"], ["--pair_batches", "false"],
                                   ["--pair_batches", "0"], ["--pair_batches", "true", "--pair_batches", "false"]])
def test_half_an_epoch_counts_samples_without_pair_batches(six_pairs_and_two_lone, flags):
    assert half_epoch_save_steps(six_pairs_and_two_lone, 1, flags) == 7  # 14 steps of one sample
    assert half_epoch_save_steps(six_pairs_and_two_lone, 4, flags) == 2  # 4 steps of four (the last short)


@pytest.mark.parametrize("flags", [["--pair_batches"], ["--pair_batches", "true"], ["--pair_batches", "True"],
                                   ["--pair_batches", "1"], ["--pair_batches", "yes"],
                                   ["--train_on", "judgement", "--pair_batches", "--key_token_weight", "2"],
                                   ["--pair_batches=true"], ["--pair-batches"], ["--pair_batches", "t"]])
def test_half_an_epoch_counts_pairs_with_pair_batches(six_pairs_and_two_lone, flags):
    assert half_epoch_save_steps(six_pairs_and_two_lone, 1, flags) == 4  # 8 items: six pairs, two lone samples
    assert half_epoch_save_steps(six_pairs_and_two_lone, 4, flags) == 1  # 2 steps of four items
