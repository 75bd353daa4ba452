"""Linear probing (LP), the first stage of a run with a verdict head: the probe (``probe.py``'s maths on the
frozen base model's features of the training and dev samples, computed once and shared over the ranks) and the head
made from it.

``fit_probe`` turns ``probe.calibrated_probe`` into the head's float32 tensors and scores them as evaluation will
(``ProbeFit``); ``head_from_probe`` makes the ``VerdictHead`` (``model/verdict_head.py``) of them: the scaler's
mean/scale and the probe's one affine map divided by the calibrated temperature, so the head's P(defective) is the
pipeline's ``predict_proba`` at that temperature: the same verdicts at 0.5, the same ranking.
``tools/probe_features.py`` uses the same fit to measure which layers hold the judgement.

``train_lora.py`` calls ``fit_head``: the head it returns is the judge of an LP-only run
(``--finetuning_type none``) and the starting point of fine-tuning with the head (LP-FT). The features
are those of the prompts exactly as training encodes them (an over-long event already cut), so the
head starts from what the model it trains with sees.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from defect_judge.data.labels import is_labelled
from defect_judge.distributed import all_ranks, from_rank_zero, rank_and_world
from defect_judge.errors import InputError
from defect_judge.evaluate.metrics import verdict_scores
from defect_judge.model.hidden_states import prompt_features
from defect_judge.model.loading import load_causal_lm, pick_dtype
from defect_judge.model.verdict_head import HeadSpec, VerdictHead, head_logits
from defect_judge.train.probe import CalibratedProbe, calibrated_probe, describe_fit, has_dev_split
from defect_judge.train.samples import FittedSample, prompt_ids, verdict_label

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ fit

@dataclass(frozen=True)
class ProbeFit:
    """A fitted probe as the head's tensors, and how it was chosen."""
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    report: dict

    @classmethod
    def of(cls, probe: CalibratedProbe) -> "ProbeFit":
        """The calibrated probe's affine map as the head's float32 tensors."""
        return cls(torch.tensor(probe.mean, dtype=torch.float32), torch.tensor(probe.scale, dtype=torch.float32),
                   torch.tensor(probe.weight, dtype=torch.float32), torch.tensor([probe.bias], dtype=torch.float32),
                   probe.report)

    def probabilities(self, features) -> "object":
        """P(defective) of each row of ``features`` (numpy), by the head's formula in float64."""
        tensors = (self.mean, self.scale, self.weight, self.bias)
        logits = head_logits(torch.as_tensor(features, dtype=torch.float64), *(t.double() for t in tensors))
        return torch.sigmoid(logits).numpy()


def fit_probe(train_x, train_y: Sequence[int], groups: Sequence[str], *, probe: str = "logistic",
              grid: Sequence[float] | None = None, dev_x=None, dev_y: Sequence[int] | None = None,
              choose_on: str = "cv") -> ProbeFit:
    """``probe.calibrated_probe`` (its regularisation chosen by cross-validation over whole pairs on train, or on
    dev) as the head's tensors; the report adds train's and dev's scores of the head itself (its float32 tensors),
    as evaluation will compute its P(defective). Data it cannot be fitted on: ``probe.ProbeDataError``."""
    fit = ProbeFit.of(calibrated_probe(train_x, train_y, groups, probe=probe, grid=grid, dev_x=dev_x, dev_y=dev_y,
                                       choose_on=choose_on))
    fit.report["train"] = verdict_scores(train_y, fit.probabilities(train_x))
    if has_dev_split(dev_x, dev_y):
        fit.report["dev"] = verdict_scores(dev_y, fit.probabilities(dev_x))
    return fit


def head_from_probe(fit: ProbeFit, spec: HeadSpec | str, model_config, *, positive: str, negative: str,
                    base_model_path: str | os.PathLike = "") -> VerdictHead:
    spec = spec if isinstance(spec, HeadSpec) else HeadSpec.parse(spec)
    depth = int(model_config.num_hidden_layers)
    head = VerdictHead(spec.layer_indices(depth), spec.pooling, int(model_config.hidden_size), depth,
                       positive=positive, negative=negative, spec=str(spec),
                       base_model_path=str(Path(base_model_path).resolve()) if base_model_path else "",
                       fit=fit.report)
    head.load_tensors({"mean": fit.mean, "scale": fit.scale, "weight": fit.weight, "bias": fit.bias})
    return head


# ------------------------------------------------------- the frozen model's features

@contextlib.contextmanager
def plain_loading() -> Iterator[None]:
    """Load a model whole even when a DeepSpeed ZeRO-3 config is active (which would partition its weights
    over the ranks as it loads): the frozen model of the probe runs alone on every rank."""
    from transformers.integrations import deepspeed as hf_deepspeed

    reference = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = reference


def shared_features(model, prompts: Sequence[Sequence[int]], head_layers: Sequence[int], pooling: str, *,
                    desc: str) -> torch.Tensor:
    """Every prompt's features, each rank computing a strided share and all of them receiving the whole."""
    rank, world = rank_and_world()
    mine = list(range(rank, len(prompts), world))
    features = prompt_features(model, [prompts[i] for i in mine], head_layers, pooling, progress=rank == 0,
                               desc=desc)
    if world == 1:
        return features
    whole = torch.zeros((len(prompts), features.shape[1]), dtype=torch.float32)
    for indices, values in all_ranks((mine, features)):
        if indices:
            whole[indices] = values
    return whole


def labelled(samples: Sequence[FittedSample], positive: str, path: str) -> list[int]:
    labels = [verdict_label(s, positive) for s in samples]
    missing = next((s for s in samples if not is_labelled(s)), None)
    if missing is not None:
        raise InputError("a verdict head needs every sample's reference judgement (判断:…)", path=path,
                         sample=missing.id, field="text")
    return labels


def fit_head(model_path: str | os.PathLike, spec: HeadSpec, train: Sequence[FittedSample],
             dev: Sequence[FittedSample], *, positive: str, negative: str, train_path: str, dev_path: str | None,
             device, trust_remote_code: bool = False, allow_pickle: bool = False,
             probe: str = "logistic", grid: Sequence[float] | None = None, choose_on: str = "cv") -> VerdictHead:
    """Fit the head on the frozen model at ``model_path``: features on every rank's share, the probe fitted
    on rank 0 (its regularisation by cross-validation over pairs, or on dev) and sent to the others."""
    train_y = labelled(train, positive, train_path)
    dev_y = labelled(dev, positive, dev_path or "") if dev else []
    dtype = pick_dtype(str(device))
    with plain_loading():
        model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=trust_remote_code,
                               allow_pickle=allow_pickle).to(device).eval()
    layers = spec.layer_indices(model.config.num_hidden_layers)
    config = model.config
    log.info("verdict head %s: linear probe on the frozen model's layers %s (%s over the prompt), %d training "
             "and %d dev samples", spec, ", ".join(map(str, layers)), spec.pooling, len(train), len(dev))
    train_x = shared_features(model, [prompt_ids(s) for s in train], layers, spec.pooling, desc="probe: train")
    dev_x = shared_features(model, [prompt_ids(s) for s in dev], layers, spec.pooling, desc="probe: dev") \
        if dev else None
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    fit = None
    if rank_and_world()[0] == 0:
        groups = [s.pair_id if s.pair_id is not None else s.id for s in train]
        fit = fit_probe(train_x.numpy(), train_y, groups, probe=probe, grid=grid,
                        dev_x=dev_x.numpy() if dev_x is not None else None, dev_y=dev_y, choose_on=choose_on)
        fit.report["train_data"] = str(Path(train_path).resolve())
        if dev_path:
            fit.report["dev_data"] = str(Path(dev_path).resolve())
    head = head_from_probe(from_rank_zero(fit), spec, config, positive=positive, negative=negative,
                           base_model_path=model_path)
    log.info("verdict head %s fitted: %s", spec, describe_fit(head.fit))
    return head
