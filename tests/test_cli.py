"""defect_judge/cli.py: a script's settings block is its defaults, its flags and its --help."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

from defect_judge import REPO_ROOT, load_script
from defect_judge.cli import parse_settings, script_settings, settings_parser
from helpers import run_script

SCRIPT = '''"""A script."""
import json

# ----------------------------------------------------------------------------
# 参数配置 (a heading: a blank line keeps it off the first setting)

# 模型路径: the model
MODEL_PATH = "./models/tiny"
BATCH_SIZE = 32  # samples per batch (100% of them)
# a long explanation that runs over
# two comment lines
RATIO = 0.5  # and ends here
VERBOSE = False  # say more
NAMES = ["a", "b"]  # some names
json_path = ""  # write JSON here
# ----------------------------------------------------------------------------
AFTER = 1  # not a setting
'''


def script_globals(tmp_path: Path, source: str = SCRIPT) -> dict:
    path = tmp_path / "script.py"
    path.write_text(source, encoding="utf-8")
    namespace = {"__file__": str(path)}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def test_the_block_gives_names_defaults_and_the_comments_as_help(tmp_path):
    settings = script_settings(script_globals(tmp_path), {"json_path": "json"})
    assert [(s.name, s.flag, s.default) for s in settings] == [
        ("MODEL_PATH", "model_path", "./models/tiny"), ("BATCH_SIZE", "batch_size", 32), ("RATIO", "ratio", 0.5),
        ("VERBOSE", "verbose", False), ("NAMES", "names", ["a", "b"]), ("json_path", "json", "")]
    helps = {s.name: s.help for s in settings}
    assert helps["MODEL_PATH"] == "模型路径: the model"  # the heading above the blank line is not part of it
    assert helps["RATIO"] == "a long explanation that runs over two comment lines and ends here"
    help_text = settings_parser(settings, "A script.").format_help()
    assert "samples per batch (100% of them) (default: 32)" in help_text
    assert "--json" in help_text and "--json_path" not in help_text and "AFTER" not in help_text.upper()


def test_parsed_values_have_the_defaults_types_and_say_which_flags_were_given(tmp_path):
    module = script_globals(tmp_path)
    args, given = parse_settings(module, paths=("model_path",), argv=["--batch_size", "8", "--verbose", "--names", "x"])
    assert given == {"batch_size", "verbose", "names"}
    assert (args.batch_size, args.verbose, args.names, args.ratio) == (8, True, ["x"], 0.5)
    assert args.model_path == str((REPO_ROOT / "models/tiny").resolve())  # a relative default: from the repo root
    args, given = parse_settings(module, paths=("model_path",), argv=["--model_path", "rel/here", "--verbose", "no"])
    assert args.model_path == "rel/here" and args.verbose is False and given == {"model_path", "verbose"}


def test_parsed_settings_are_never_changed_after_parsing(tmp_path):
    args, _ = parse_settings(script_globals(tmp_path), argv=["--batch_size", "8"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        args.batch_size = 16
    changed = dataclasses.replace(args, batch_size=16)  # a derived copy, the parsed one untouched
    assert (changed.batch_size, args.batch_size, changed.ratio) == (16, 8, 0.5)


def test_the_module_value_is_the_default_so_an_edited_constant_counts(tmp_path):
    module = script_globals(tmp_path)
    module["BATCH_SIZE"] = 4
    args, given = parse_settings(module, argv=[])
    assert args.batch_size == 4 and not given


def test_a_bad_value_stops_with_the_flag_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_settings(script_globals(tmp_path), argv=["--batch_size", "many"])
    assert stop.value.code == 2 and "--batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("block, problem", [
    ("X = 1\n", "has no comment"),
    ("# x\nif True:\n    X = 1\n", "only `NAME = value` lines"),
])
def test_a_malformed_block_is_a_clear_error(tmp_path, block, problem):
    rule = "# " + "-" * 40 + "\n"
    with pytest.raises(ValueError, match=problem):
        script_settings(script_globals(tmp_path, rule + block + rule))


def test_a_script_without_a_block_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no settings block"):
        script_settings(script_globals(tmp_path, "X = 1  # one\n"))


PLAIN_SCRIPTS = ["dataset/convert_and_split.py", "dataset/make_sample_data.py", "eval/model_evaluation.py",
                 "eval/baseline.py", "eval/plot_subtype_acc.py", "eval/bench_eval.py", "instruct_fine_tuning/sweep.py",
                 "instruct_fine_tuning/bench_train.py", "tools/gpu_check/__main__.py", "tools/probe_features.py",
                 "tools/demo_summary.py", "tools/export_embedded_model.py"]
PACKAGE_SCRIPTS = {"tools/gpu_check/__main__.py": "tools.gpu_check.__main__"}  # a package run as a folder


@pytest.mark.parametrize("script", PLAIN_SCRIPTS)
def test_every_plain_script_declares_its_settings_in_one_block(script):
    module = importlib.import_module(PACKAGE_SCRIPTS[script]) if script in PACKAGE_SCRIPTS else load_script(script)
    settings = script_settings(vars(module), getattr(module, "FLAGS", None))
    assert settings and all(s.help for s in settings)
    args, given = parse_settings(vars(module), argv=[], paths=getattr(module, "PATHS", ()),
                                 flags=getattr(module, "FLAGS", None))
    assert not given and set(vars(args)) == {s.flag for s in settings}


def test_the_document_names_stay_and_their_comments_are_the_help():
    result = run_script(REPO_ROOT / "eval/model_evaluation.py", "--help", check=True)
    text = " ".join(result.stdout.split())
    for flag in ("--model_path", "--test_dataset_path", "--tokenizer_path"):
        assert flag in text
    assert "模型路径: a model folder, LoRA adapter folder, training OUTPUT_DIR" in text
    assert "分词器路径 (the design document names /data/Qwen2.5-Coder-7B-Instruct" in text
    assert "empty: the tokenizer that comes with the model" in text
