"""defect_judge/model/head_files.py: the verdict head's file names, a folder holds a head when its config file is
there (the weights alone are not a head), and asking costs no torch import."""
from __future__ import annotations

import json

from defect_judge.model.head_files import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, has_head
from helpers import PYTHON, run_script


def test_the_file_names_are_the_documented_ones():
    # docs/design.md and every saved model folder name them; a rename orphans the heads already trained
    assert (HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE) == ("verdict_head.json", "verdict_head.safetensors")


def test_a_folder_holds_a_head_when_its_config_file_is_there(tmp_path):
    assert not has_head(None) and not has_head(tmp_path) and not has_head(tmp_path / "missing")
    (tmp_path / HEAD_WEIGHTS_FILE).write_bytes(b"")
    assert not has_head(tmp_path)  # weights without their spec are no head
    (tmp_path / HEAD_CONFIG_FILE).mkdir()
    assert not has_head(tmp_path)  # a folder of that name is not the file
    (tmp_path / HEAD_CONFIG_FILE).rmdir()
    (tmp_path / HEAD_CONFIG_FILE).write_text(json.dumps({"spec": "mean@0.5"}), encoding="utf-8")
    assert has_head(tmp_path) and has_head(str(tmp_path))


def test_asking_imports_no_torch():
    """The run folder and path resolution ask before any model is loaded: the module stays free of torch."""
    code = ("import sys, defect_judge.model.head_files as h; h.has_head('.'); "
            "print(sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))")
    result = run_script(PYTHON, "-c", code, check=True)
    assert result.stdout.strip() == "[]"
