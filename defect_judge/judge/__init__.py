"""The stage that judges new code with a trained judge: a static analyzer's warnings (SARIF in, SARIF out), the
functions of source files, or unlabelled samples (``judge/judge_code.py``)."""
