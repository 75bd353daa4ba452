"""The demo pipeline end to end (tools/run_demo.sh, what `make demo` runs) on a tiny model and a
handful of the shipped samples, so that CI catches a broken stage. The full demo on the embedded
model is run and timed by hand (README)."""
from __future__ import annotations

import json

from PIL import Image

from defect_judge.model.verdict_head import load_head
from defect_judge.train.recipes import RECIPES
from helpers import REPO_ROOT, few_samples, run_script


def test_demo_pipeline_runs_every_stage(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "demo"
    env = {"DEMO_MODEL": str(tiny_model_dir), "DEMO_INPUT_DIR": str(few_samples(tmp_path / "raw")),
           "RUN_DIR": str(run_dir), "DEMO_MAX_STEPS": "2", "DEMO_MAX_NEW_TOKENS": "8",
           "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    result = run_script(REPO_ROOT / "tools" / "run_demo.sh", env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for stage in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"] {stage} " in result.stdout

    data = run_dir / "data"
    test_ids = {json.loads(line)["id"] for line in (data / "test.jsonl").read_text().splitlines()}
    dev_ids = {json.loads(line)["id"] for line in (data / "dev.jsonl").read_text().splitlines()}
    assert dev_ids and not dev_ids & test_ids
    best = json.loads((run_dir / "train" / "best_checkpoint.json").read_text(encoding="utf-8"))
    assert (run_dir / "train" / best["best_checkpoint"] / "adapter_model.safetensors").is_file()
    # chosen on dev by the recipe's metric, never on test
    assert best["eval_data"] == str((data / "dev.jsonl").resolve()) and best["eval_is_test_data"] is False
    assert best["metric"] == "accuracy_then_loss"
    for name in ("eval_base", "eval_tfidf", "eval_tuned", "eval_head"):
        results = json.loads((run_dir / name / "evaluation_results.json").read_text(encoding="utf-8"))
        assert {s["id"] for s in results["samples"]} == test_ids
    tuned = json.loads((run_dir / "eval_tuned" / "evaluation_results.json").read_text(encoding="utf-8"))
    assert tuned["model_kind"].startswith("output_dir")  # followed best_checkpoint.json
    assert tuned["verdict_source"] == "generated" and tuned["verdict_head"] is None  # the model alone
    # The default recipe has a verdict head: fitted on the frozen model, carried by the chosen checkpoint; the
    # judge with it answers in the document's format, the head's verdict first.
    recipe = RECIPES["demo_head"]
    assert best["verdict_head"] == recipe.verdict_head
    assert load_head(run_dir / "train" / best["best_checkpoint"]).fit["probe"] == "lda"
    assert "linear probe on the frozen model's layers" in result.stderr and "lda probe, shrinkage = " in result.stderr
    head = json.loads((run_dir / "eval_head" / "evaluation_results.json").read_text(encoding="utf-8"))
    assert head["verdict_source"] == "head" and head["overall"]["invalid_format"] == 0
    assert all(s["response"].startswith(f"判断:{s['prediction']}\n\n原因：") for s in head["samples"])
    for image in [run_dir / "comparison" / name for name in
                  ("model_comparison.png", "overall_accuracy_comparison.png", "type_accuracy_comparison.png",
                   "pair_outcomes_comparison.png")] + \
                 [run_dir / "train" / "learning_curve.png"]:
        with Image.open(image) as png:
            assert png.width >= 600 and png.height >= 300

    summary = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "| majority class (always" in summary and "| TF-IDF + logistic regression |" in summary
    assert "| base `" in summary and "| fine-tuned `" in summary
    assert "exact binomial" in summary and "McNemar" in summary and "4 fine-tuning" in summary
    assert "chosen on" in summary and "the dev split" in summary and "learning_curve.png" in summary
    assert "## Twin pairs" in summary and "| fine-tuned | " in summary and "P-C" in summary
    assert f"| fine-tuned + head `{recipe.verdict_head}`" in summary and "| fine-tuned + head |" in summary
    assert "## Does the judge with the head judge well?" in summary and "agree on" in summary
    assert "the model alone (its scored answer, no head)" in summary
    assert "VD-S at FPR ≤ 0.5%" in summary and "ROC-AUC" in summary
    scored = json.loads((run_dir / "eval_tuned_score" / "evaluation_results.json").read_text(encoding="utf-8"))
    assert scored["decision"]["headline"] == "threshold" and scored["pairs"]["overall"]["pairs"] >= 1
    assert scored["verdict_source"] == "head" and scored["model_alone"] is not None
    with Image.open(run_dir / "eval_tuned_score" / "roc_curve.png") as png:
        assert png.width >= 600
    offline_runs = list((run_dir / "train" / "wandb").glob("offline-run-*"))
    assert offline_runs and f"wandb sync {offline_runs[0]}" in summary
