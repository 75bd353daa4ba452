"""defect_judge/evaluate/session.py on the tiny real model and real folders: what a model path is (its notes
warned), the model's context read from its config as data, the most tokens a prompt may have (the flag, the
training's max_length recorded with the model, the context) and the cut prompts reported in one warning; a session
that loads its model once, judges by its mechanism and fingerprints what decides its verdicts; and a share of
prompts judged into a partial file that a later run resumes from (or starts over with --overwrite).

eval/model_evaluation.py and judge/judge_code.py assemble their judges here; their tests run it end to end
(tests/scripts/test_model_evaluation.py, tests/judge/test_stage.py)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from defect_judge.distributed import Ranks
from defect_judge.errors import InputError
from defect_judge.evaluate.head_choice import HeadChoice, choose_head
from defect_judge.evaluate.judges import Prompt, answer_tokens, prompts_longest_first
from defect_judge.evaluate.results_folder import partial_file, partial_files
from defect_judge.evaluate.session import (JudgeSession, finished_rows, judge_share, model_context, prompt_budget,
                                           report_cuts, resolve_model)
from defect_judge.evaluate.verdicts import GENERATED, HEAD, SCORED
from defect_judge.model import inference
from defect_judge.model import paths as model_paths
from defect_judge.model.head_files import HEAD_WEIGHTS_FILE
from defect_judge.model.verdict_head import VerdictHead
from helpers import assert_input_error, chat_records

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

YES_NO = ["否", "是"]
CPU = Ranks(0, 1, "cpu")
LOG = "defect_judge.evaluate.session"


@pytest.fixture(scope="module")
def plain(tiny_model_dir) -> JudgeSession:
    """The tiny model with no head and no judge card: a base model."""
    return JudgeSession(*resolve_model(str(tiny_model_dir)), CPU, HeadChoice(None))


@pytest.fixture(scope="module")
def headed(tmp_path_factory, tiny_model_dir) -> JudgeSession:
    """The tiny model carrying a verdict head whose verdict_head.json records training's max_length, 512."""
    folder = tmp_path_factory.mktemp("headed") / "model"
    shutil.copytree(tiny_model_dir, folder)
    card = {"judgements": YES_NO, "positive": "是", "negative": "否", "subtypes": [], "max_length": 512,
            "dev_threshold": None}
    VerdictHead([1, 2], "mean", 64, 2, positive="是", negative="否", spec="mean@0.5,1.0", card=card).save(folder)
    resolved, tokenizer_dir = resolve_model(str(folder))
    return JudgeSession(resolved, tokenizer_dir, CPU, choose_head("", resolved, YES_NO))


# ------------------------------------------------------------------ the model and its limits

def test_resolving_a_path_logs_what_it_is_warns_its_notes_and_finds_the_tokenizer(training_output_dir, tmp_path,
                                                                                   caplog):
    with caplog.at_level(logging.INFO, logger=LOG):
        resolved, tokenizer_dir = resolve_model(str(training_output_dir))
    assert resolved.weights_path == training_output_dir / "checkpoint-4" and tokenizer_dir == resolved.weights_path
    assert f"model {training_output_dir}: training OUTPUT_DIR, best checkpoint checkpoint-4" in caplog.text
    assert f"tokenizer {tokenizer_dir}" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    moved = tmp_path / "run"
    shutil.copytree(training_output_dir, moved)
    shutil.rmtree(moved / "checkpoint-4")
    caplog.clear()
    resolved, tokenizer_dir = resolve_model(str(moved))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOG]
    assert warned == [f"checkpoint-4 no longer exists; using the best model saved in {moved} itself"]
    assert resolved.weights_path == moved and tokenizer_dir == moved


def test_the_context_is_read_from_the_config_as_data(plain, training_output_dir, tmp_path):
    assert model_context(plain.resolved) == 4096
    assert model_context(model_paths.resolve_model(training_output_dir)) == 4096  # an adapter: its base's config

    def context_of(config: dict) -> int | None:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return model_context(model_paths.ResolvedModel(folder, model_paths.BASE_MODEL, folder))

    assert context_of({"text_config": {"max_position_embeddings": 2048}, "max_position_embeddings": 8}) == 2048
    assert context_of({"auto_map": {"AutoModel": "modeling_x.X"}, "max_position_embeddings": 1024}) == 1024
    for unknown in ({}, {"max_position_embeddings": True}, {"max_position_embeddings": 0},
                    {"max_position_embeddings": "4096"}):
        assert context_of(unknown) is None, unknown


def test_a_prompt_may_take_what_the_flag_training_or_the_context_leave():
    def budget(**limits):
        return prompt_budget(**({"max_length": 0, "trained_max_length": None, "context": None, "verdict_tokens": 6,
                                 "answer_tokens": 6} | limits))

    assert budget() == (None, "no limit known")
    assert budget(max_length=1024, trained_max_length=512, context=4096) == \
        (1018, "--max_length 1024 less 6 tokens of verdict")  # the flag wins over the training's
    assert budget(trained_max_length=512, context=4096) == (506, "the training's max_length 512 less 6 tokens of verdict")
    assert budget(context=4096, answer_tokens=262) == (3834, "the model's context 4096 less 262 answer tokens")
    # a flag above the context: prompt and answer must still fit in the context
    assert budget(max_length=8192, context=4096, answer_tokens=6)[0] == 4090
    assert budget(max_length=100)[0] == 94  # no context known: the flag alone
    assert_input_error(lambda: budget(max_length=5), "field 'max_length'",
                       "no room left for a prompt: --max_length 5 less 6 tokens of verdict")
    assert_input_error(lambda: budget(context=300, answer_tokens=300), "no room left for a prompt: the model's "
                       "context 300 less 300 answer tokens")


def test_the_cut_prompts_are_reported_in_one_warning_naming_the_first_five(caplog):
    records = chat_records(8)
    prompts = [Prompt(record, "", [], 40 if i != 3 else 0) for i, record in enumerate(records)]
    with caplog.at_level(logging.WARNING, logger=LOG):
        report_cuts(prompts, 700, "--max_length 706 less 6 tokens of verdict", noun="question")
        report_cuts([Prompt(records[0], "", [])], 700, "why")  # none cut: nothing to say
    assert len(caplog.records) == 1
    first = ", ".join(r.id for r in records[:3] + records[4:6])
    assert caplog.records[0].getMessage() == (
        "7 question(s) longer than the model takes (700 tokens: --max_length 706 less 6 tokens of verdict) had the end "
        f"of their code cut to fit, as training cuts them (recorded per question): {first}, ...")


# ------------------------------------------------------------------ the session

def test_a_session_loads_its_model_once_and_judges_by_its_mechanism(tiny_model_dir, headed, caplog):
    session = JudgeSession(*resolve_model(str(tiny_model_dir)), CPU, HeadChoice(None))
    assert session.dtype == torch.float32 and session._model is None  # nothing loaded before it is asked for
    with caplog.at_level(logging.INFO, logger=LOG):
        model = session.model
        assert session.model is model
    assert caplog.text.count("loaded in") == 1 and "on cpu (torch.float32)" in caplog.text
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    score = session.judge(YES_NO, "score")
    assert score.source == SCORED and score.model is model and score.vocabulary == YES_NO and score.head is None
    generate = session.judge(YES_NO, "generate", max_new_tokens=7)
    assert generate.source == GENERATED and generate.max_new_tokens == 7
    assert generate.stop_ids == inference.stop_token_ids(session.tokenizer, model)
    assert session.tokenizer.eos_token_id in generate.stop_ids
    with_head = headed.judge(YES_NO, "generate", threshold=0.3, model_answer=False)
    assert with_head.source == HEAD and with_head.head is headed.head.head
    assert (with_head.threshold, with_head.model_answer) == (0.3, False)


def test_a_session_s_prompt_budget_comes_from_the_flag_the_judge_card_or_the_context(plain, headed):
    verdict = answer_tokens(plain.tokenizer, YES_NO)
    assert plain.prompt_budget(max_length=0, mode="score", max_new_tokens=256, vocabulary=YES_NO) == \
        (4096 - verdict, f"the model's context 4096 less {verdict} answer tokens")
    assert plain.prompt_budget(max_length=0, mode="generate", max_new_tokens=256, vocabulary=YES_NO) == \
        (4096 - verdict - 256, f"the model's context 4096 less {verdict + 256} answer tokens")
    assert headed.prompt_budget(max_length=0, mode="score", max_new_tokens=256, vocabulary=YES_NO) == \
        (512 - verdict, f"the training's max_length 512 less {verdict} tokens of verdict")
    assert headed.prompt_budget(max_length=300, mode="score", max_new_tokens=256, vocabulary=YES_NO)[0] == \
        300 - verdict


def test_the_fingerprint_holds_what_decides_the_verdicts(plain, headed, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    fingerprint = plain.fingerprint(tiny_model_dir.name)  # named relative: recorded absolute
    assert fingerprint["model_path"] == str(tiny_model_dir.resolve())
    assert fingerprint["model_kind"] == model_paths.BASE_MODEL and fingerprint["dtype"] == "float32"
    assert fingerprint["tokenizer_path"] == str(tiny_model_dir.resolve())
    assert {Path(row["file"]).name for row in fingerprint["weights"]} == {"config.json", "model.safetensors"}
    assert "verdict_head" not in fingerprint and "model_path" not in plain.fingerprint()
    weights = headed.resolved.head_path / HEAD_WEIGHTS_FILE
    assert headed.fingerprint()["verdict_head"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    json.dumps(fingerprint)  # it goes into the partial file's header as it is


# ------------------------------------------------------------------ a share judged, resumed

def test_a_judged_share_lands_in_the_partial_file_and_a_later_run_resumes_from_it(plain, tmp_path, caplog):
    prompts = prompts_longest_first(plain.tokenizer, chat_records(5))
    judge = plain.judge(YES_NO, "score")
    fingerprint = plain.fingerprint() | {"mode": "score"}
    judge_share(judge, prompts[:3], batch_size=2, partial_path=partial_file(tmp_path), fingerprint=fingerprint,
                rank=0)
    with caplog.at_level(logging.INFO, logger=LOG):
        finished = finished_rows(tmp_path, fingerprint, CPU, overwrite=False)
    assert "resuming: 3 samples already evaluated in" in caplog.text
    assert list(finished) == [prompt.record.id for prompt in prompts[:3]]
    direct = {verdict_id: verdict for verdict_id, verdict in zip(finished, judge.verdicts(prompts[:3]))}
    for sample_id, row in finished.items():
        assert row["verdict_source"] == SCORED and row["prediction"] == direct[sample_id].prediction
        assert row["probabilities"]["是"] == pytest.approx(direct[sample_id].p_defective, abs=1e-5)
    judge_share(judge, prompts[3:], batch_size=2, partial_path=partial_file(tmp_path), fingerprint=fingerprint,
                rank=0)
    assert sorted(finished_rows(tmp_path, fingerprint, CPU, overwrite=False)) == sorted(p.record.id for p in prompts)
    with pytest.raises(InputError, match="other settings"):
        finished_rows(tmp_path, fingerprint | {"mode": "generate"}, CPU, overwrite=False)
    assert finished_rows(tmp_path, fingerprint | {"mode": "generate"}, CPU, overwrite=True) == {}
    assert partial_files(tmp_path) == []


def test_another_script_keeps_its_own_partial_files_and_rows(plain, tmp_path, caplog):
    """The judge of new code: its stem, its rows, its words in the log; the evaluation's partial file is left alone."""
    prompts = prompts_longest_first(plain.tokenizer, chat_records(3))
    partial_file(tmp_path).write_text('{"partial": "defect-judge/evaluation-partial/v1", "fingerprint": {}}\n',
                                      encoding="utf-8")

    def verdict_rows(batch, verdicts):
        return [{"id": prompt.record.id, "p_defective": verdict.p_defective} for prompt, verdict in zip(batch, verdicts)]

    stem, fingerprint = "verdicts.partial", {"judge": "tiny"}
    judge_share(plain.judge(YES_NO, "score"), prompts, batch_size=3, partial_path=partial_file(tmp_path, stem=stem),
                fingerprint=fingerprint, rank=0, unit="question", to_rows=verdict_rows)
    with caplog.at_level(logging.INFO, logger=LOG):
        rows = finished_rows(tmp_path, fingerprint, CPU, overwrite=False, stem=stem, what="prompts already judged")
    assert "resuming: 3 prompts already judged" in caplog.text
    assert all(set(row) == {"id", "p_defective"} and 0 < row["p_defective"] < 1 for row in rows.values())
    assert finished_rows(tmp_path, fingerprint, CPU, overwrite=True, stem=stem) == {}
    assert partial_files(tmp_path) == [partial_file(tmp_path)]  # the evaluation's own is still there
