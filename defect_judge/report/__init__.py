"""Reporting: accuracy bar charts, the pair-outcome and ROC charts of a results folder, learning curves, and the CJK font they need."""
