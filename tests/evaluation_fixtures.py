"""What the evaluation's test files (model_evaluation.py, inference, model paths, the benchmark) share beyond
conftest.py: a single torch thread (an autouse fixture, so only the files that import it run on one thread) and
the plain definition of a candidate's log-probability."""
from __future__ import annotations

import os

import pytest

from defect_judge.model import inference


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the scripts started: on a CPU shared with other jobs two threads
    that wait on each other run many times slower. Correctness does not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    os.environ.pop("OMP_NUM_THREADS", None)


def reference_logprob(model, candidate: inference.Candidate) -> float:
    """Full logits, one sequence at a time: the plain definition of log P(continuation | prompt)."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([candidate.input_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[t - 1, candidate.input_ids[t]].item() for t in range(candidate.start, len(candidate.input_ids)))
