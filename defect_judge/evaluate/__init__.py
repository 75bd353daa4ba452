"""The evaluation stage: how a verdict is produced (verdicts, judges), thresholds, twin pairs, the results folder and its schema, resumable partial results."""
