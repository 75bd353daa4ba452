"""The comparison folder (``eval/plot_subtype_acc.py``'s output_dir): the names of what it holds.

One module names them; the comparison script writes them and the demo summary lists them.

    output_dir/
      model_comparison.png             accuracy per defect subtype
      overall_accuracy_comparison.png  overall accuracy, with McNemar's paired test against the baseline
      type_accuracy_comparison.png     accuracy per reference judgement
      pair_outcomes_comparison.png     PrimeVul's pair outcomes (test sets with twin pairs)
      comparison_summary.md            the same numbers as Markdown tables
"""
from __future__ import annotations

SUBTYPE_CHART = "model_comparison.png"
OVERALL_CHART = "overall_accuracy_comparison.png"
JUDGEMENT_CHART = "type_accuracy_comparison.png"
PAIR_CHART = "pair_outcomes_comparison.png"
SUMMARY_FILE = "comparison_summary.md"
ACCURACY_CHARTS = (SUBTYPE_CHART, OVERALL_CHART, JUDGEMENT_CHART)  # written for every comparison
