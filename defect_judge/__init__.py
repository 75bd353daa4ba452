"""Shared contracts of the defect-judge toolkit.

Every script in ``dataset/``, ``instruct_fine_tuning/`` and ``eval/`` imports the
prompt/answer templates, the answer parser and the JSONL record schema from
here, so each is defined exactly once.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
