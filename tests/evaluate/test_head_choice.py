"""defect_judge/evaluate/head_choice.py on real folders: --verdict_head empty (the head that comes with the model),
a path (another head) or none; the refusals, each before any model loads (one line naming the file and field); and
the head as the results file describes it."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from defect_judge.evaluate.head_choice import NO_HEAD, HeadChoice, choose_head
from defect_judge.model import paths as model_paths
from defect_judge.model.verdict_head import VerdictHead
from helpers import assert_input_error, build_tiny_model

YES_NO = ["否", "是"]
FIT = {"C": 0.1, "chosen_on": "dev", "train": 24, "dev": 8, "temperature": 1.7}


def save_head(folder, *, reads_base: bool = False, base_model_path: str = ""):
    """A head for the tiny model (hidden size 64, 2 layers) with random tensors, as training saves one."""
    head = VerdictHead([1, 2], "mean", 64, 2, positive="是", negative="否", spec="mean@0.5,1.0",
                       base_model_path=base_model_path, fit=FIT, reads_base=reads_base)
    generator = torch.Generator().manual_seed(len(str(folder)))
    with torch.no_grad():
        for tensor in (head.mean, head.weight):
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return head.save(folder)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, tiny_model_dir):
    """A linear-probe run's OUTPUT_DIR: a head and no model; its verdict_head.json names the tiny model."""
    return save_head(tmp_path_factory.mktemp("probe-run"), base_model_path=str(tiny_model_dir))


@pytest.fixture(scope="module")
def plain(tiny_model_dir):
    return model_paths.resolve_model(tiny_model_dir)


def test_none_judges_without_the_head_that_comes_with_the_model(tiny_model_dir, tmp_path):
    carrying = tmp_path / "model"
    shutil.copytree(tiny_model_dir, carrying)
    save_head(carrying)
    resolved = model_paths.resolve_model(carrying)
    own = choose_head("", resolved, YES_NO)
    assert own.head is not None and own.path == carrying and own.head.positive == "是"
    for spelling in (NO_HEAD, " None "):
        skipped = choose_head(spelling, resolved, YES_NO)
        assert skipped == HeadChoice(None) and skipped.to_json() is None and not skipped.reads_base


def test_a_model_without_a_head_is_judged_without_one(plain):
    assert plain.head_path is None
    assert choose_head("", plain, YES_NO) == HeadChoice(None)


def test_a_probe_run_is_judged_by_its_head_and_cannot_drop_it(probe_run, tiny_model_dir):
    resolved = model_paths.resolve_model(probe_run)
    assert resolved.is_probe_run and resolved.weights_path == tiny_model_dir
    choice = choose_head("", resolved, YES_NO)
    assert choice.path == probe_run and choice.head.layers == (1, 2) and not choice.reads_base
    assert_input_error(lambda: choose_head("none", resolved, YES_NO), str(probe_run), "field 'verdict_head'",
                       "this linear-probe run is its head and nothing else")


def test_a_head_named_by_path_is_described_for_the_results(probe_run, plain, monkeypatch):
    """Named by its folder (relative here) or either of its files; the results record the absolute folder, the
    weights' sha256, what it reads and how it was fitted (only the fit's record keys)."""
    monkeypatch.chdir(probe_run.parent)
    by_folder = choose_head(probe_run.name, plain, YES_NO)
    by_file = choose_head(str(probe_run / "verdict_head.safetensors"), plain, YES_NO)
    assert by_file.path == probe_run and not by_folder.path.is_absolute()
    described = by_folder.to_json()
    assert described == by_file.to_json()
    sha = hashlib.sha256((probe_run / "verdict_head.safetensors").read_bytes()).hexdigest()
    assert described == {"path": str(probe_run.resolve()), "weights_sha256": sha, "spec": "mean@0.5,1.0",
                         "layers": [1, 2], "pooling": "mean", "positive": "是", "negative": "否", "reads_base": False,
                         "fit": {"C": 0.1, "chosen_on": "dev", "train": 24, "dev": 8}}
    json.dumps(described)  # it goes into evaluation_results.json as it is


def test_a_head_that_is_not_there_is_one_line(plain, tmp_path):
    assert_input_error(lambda: choose_head(str(tmp_path / "nowhere"), plain, YES_NO), str(tmp_path / "nowhere"),
                       "verdict head not found", "field 'verdict_head'")
    assert_input_error(lambda: choose_head(str(tmp_path), plain, YES_NO), str(tmp_path), "not a verdict head")


def test_a_head_that_reads_the_base_model_needs_an_adapter_to_switch_off(training_output_dir, tiny_model_dir,
                                                                         tmp_path):
    on_base = save_head(tmp_path / "on-base", reads_base=True)
    lora = model_paths.resolve_model(training_output_dir)
    assert lora.is_adapter
    beside_adapter = choose_head(str(on_base), lora, YES_NO)
    assert beside_adapter.reads_base and beside_adapter.to_json()["reads_base"] is True
    assert choose_head(str(on_base), model_paths.resolve_model(tiny_model_dir), YES_NO).reads_base  # the base
    full = tmp_path / "full"
    shutil.copytree(tiny_model_dir, full)
    (full / "trainer_state.json").write_text("{}", encoding="utf-8")  # what marks a folder as trained
    tuned = model_paths.resolve_model(full)
    assert tuned.kind == model_paths.FULL_MODEL
    assert_input_error(lambda: choose_head(str(on_base), tuned, YES_NO), str(on_base), "field 'reads_base'",
                       f"{full} is a fully fine-tuned model with no adapter to switch off")
    assert not choose_head(str(save_head(tmp_path / "on-tuned")), tuned, YES_NO).reads_base  # reads what it judges


def test_a_head_fitted_for_another_shape_is_refused(probe_run, embedded_tokenizer, tmp_path):
    deeper = model_paths.resolve_model(build_tiny_model(tmp_path / "deeper", embedded_tokenizer, layers=3))
    assert_input_error(lambda: choose_head(str(probe_run), deeper, YES_NO), str(probe_run), "field 'hidden_size'",
                       "fitted for a model of hidden size 64 and 2 layers, this model has hidden size 64 and 3 layers")


def test_a_model_config_that_cannot_be_read_is_one_line(probe_run, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    resolved = model_paths.resolve_model(broken)
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    assert_input_error(lambda: choose_head(str(probe_run), resolved, YES_NO), str(broken),
                       "cannot read the model's config")


@pytest.mark.parametrize("vocabulary, shown", [(["无缺陷", "有缺陷"], "无缺陷/有缺陷"), (["可疑"], "可疑"),
                                               (["否", "是", "不确定"], "否/是/不确定")])
def test_a_head_for_other_judgements_than_the_test_sets_is_refused(probe_run, plain, vocabulary, shown):
    assert_input_error(lambda: choose_head(str(probe_run), plain, vocabulary), str(probe_run), "field 'positive'",
                       f"the head tells 是/否 apart, the test set's judgements are {shown}")
