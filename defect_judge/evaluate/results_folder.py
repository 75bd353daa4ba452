"""The evaluation results folder (model_evaluation.py's and baseline.py's OUTPUT_DIR): the names of what it holds.

One module names them; the scripts, the charts, the sweep, the demo summary and the partial-results files ask it.

    OUTPUT_DIR/
      evaluation_results.json                    the results (evaluate/results.py owns its schema)
      evaluation_results.partial[.rankR].jsonl   finished samples of an unfinished run (evaluate/partial.py)
      subtype_accuracy.png                       accuracy per subtype, with sample sizes and Wilson intervals
      pair_outcomes.png                          P-C / P-V / P-B / P-R per category (test sets with twin pairs)
      roc_curve.png                              ROC and precision-recall (scored results)
      threshold_dev/                             the dev split's own results folder (--threshold_from a .jsonl)
"""
from __future__ import annotations

from pathlib import Path

RESULTS_FILE = "evaluation_results.json"
PARTIAL_STEM = "evaluation_results.partial"
SUBTYPE_ACCURACY_FILE = "subtype_accuracy.png"
PAIR_OUTCOMES_FILE = "pair_outcomes.png"
ROC_FILE = "roc_curve.png"
THRESHOLD_DEV_FOLDER = "threshold_dev"
CHART_FILES = (SUBTYPE_ACCURACY_FILE, PAIR_OUTCOMES_FILE, ROC_FILE)


def results_file(path: str | Path) -> Path:
    """An ``evaluation_results.json``, named itself or by the folder that holds it."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def partial_file(output_dir: str | Path, rank: int = 0, stem: str = PARTIAL_STEM) -> Path:
    """Where rank ``rank`` appends its finished samples (rank 0 has no suffix, as a single process); ``stem``:
    another script's partial files (the judge of new code keeps its own)."""
    suffix = f".rank{rank}" if rank else ""
    return Path(output_dir) / f"{stem}{suffix}.jsonl"


def partial_files(output_dir: str | Path, stem: str = PARTIAL_STEM) -> list[Path]:
    """Every rank's partial file in the folder, rank 0's first."""
    return sorted(Path(output_dir).glob(f"{stem}*.jsonl"))
