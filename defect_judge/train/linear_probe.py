"""Linear probing (LP), the first stage of a run with a verdict head: the probe (standardised features, then a
linear classifier) fitted on the frozen base model's features of the training and dev samples, computed once and
shared over the ranks, and the head made from it.

``fit_probe`` is scikit-learn on frozen features: ``StandardScaler``, then one of two linear probes (``PROBES``),
its regularisation chosen by cross-validation over whole twin pairs on train (``StratifiedGroupKFold``) or on dev:

- ``logistic``: ``LogisticRegression``, regularised by C;
- ``lda``: ``LinearDiscriminantAnalysis`` with shrinkage, on the training features' principal components
  (``PCA``, all of them: with fewer samples than dimensions this loses nothing the classifier can use, and the
  covariance it inverts is samples x samples instead of dimensions x dimensions). It weighs each direction by how
  little the code's content moves it: the mean over a prompt varies most with what the code is about, and the
  difference between a defective function and its fixed twin lies in directions that vary little. On the shipped
  split, by nested cross-validation over train + dev, it is right about 2-3 points more often than logistic
  regression on the same layers (instruct_fine_tuning/readme.md, "The verdict head").

``head_from_probe`` turns the fitted pipeline into a ``VerdictHead`` (``model/verdict_head.py``): the scaler's
mean/scale and the probe's one affine map divided by a temperature (calibrated on out-of-fold decisions, so
P(defective) means what it says and never rounds to 1), so the head's P(defective) is the pipeline's
``predict_proba`` at that temperature: the same verdicts at 0.5, the same ranking.
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
from typing import Callable, Iterator, Sequence

import torch

from defect_judge.data.labels import is_labelled
from defect_judge.distributed import all_ranks, from_rank_zero, rank_and_world
from defect_judge.errors import InputError
from defect_judge.model.hidden_states import prompt_features
from defect_judge.model.loading import load_causal_lm, pick_dtype
from defect_judge.model.verdict_head import HeadSpec, VerdictHead, head_logits
from defect_judge.train.samples import FittedSample, prompt_ids, verdict_label

log = logging.getLogger(__name__)

DEFAULT_C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_SHRINKAGE_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
CV_FOLDS = 5


def _logistic_pipeline(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _lda_pipeline(shrinkage: float):
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), PCA(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage))


@dataclass(frozen=True)
class ProbeKind:
    """A linear probe on standardised features: the parameter that regularises it and its candidates."""
    name: str
    parameter: str                       # the regularisation's name in the report and on the command line
    grid: tuple[float, ...]              # the default candidates
    stronger_when_larger: bool           # ties in the choice go to the stronger regularisation
    grid_flag: str                       # train_lora.py's flag for the candidates
    pipeline: Callable[[float], object]  # scikit-learn's pipeline for one value of the parameter
    valid: Callable[[float], bool]       # a value the pipeline accepts
    valid_text: str                      # ... said in words

    def check_grid(self, grid: Sequence[float], flag: str | None = None) -> None:
        """Refuse, in one line naming ``flag``, an empty grid or a value the probe cannot take."""
        if not grid or not all(self.valid(value) for value in grid):
            raise InputError(f"{flag or self.grid_flag} must be {self.valid_text}, got {list(grid)}")


PROBES = {kind.name: kind for kind in (
    ProbeKind("logistic", "C", DEFAULT_C_GRID, False, "--verdict_head_c_grid", _logistic_pipeline,
              lambda c: c > 0, "positive numbers"),
    ProbeKind("lda", "shrinkage", DEFAULT_SHRINKAGE_GRID, True, "--verdict_head_shrinkage_grid", _lda_pipeline,
              lambda s: 0 <= s <= 1, "numbers in [0, 1]"),
)}


def probe_grid(probe: str, c_grid: Sequence[float], shrinkage_grid: Sequence[float]) -> Sequence[float]:
    """Of a script's two grid settings, the one ``probe`` is regularised by: C for logistic, shrinkage for lda."""
    return {"logistic": c_grid, "lda": shrinkage_grid}[probe]


# ------------------------------------------------------------------------ fit

@dataclass(frozen=True)
class ProbeFit:
    """A fitted probe as the head's tensors, and how it was chosen."""
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    report: dict

    def probabilities(self, features) -> "object":
        """P(defective) of each row of ``features`` (numpy), by the head's formula in float64."""
        tensors = (self.mean, self.scale, self.weight, self.bias)
        logits = head_logits(torch.as_tensor(features, dtype=torch.float64), *(t.double() for t in tensors))
        return torch.sigmoid(logits).numpy()


def _grouped_folds(labels, groups) -> "object":
    from sklearn.model_selection import StratifiedGroupKFold

    splits = max(2, min(CV_FOLDS, len(set(groups)), int(min(sum(labels), len(labels) - sum(labels)))))
    return StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=0)


def _affine_map(fitted) -> tuple["object", float]:
    """The fitted pipeline's decision function on the scaler's output, as weight and bias: logistic
    regression's own, or LDA's composed with the principal components it was fitted on."""
    probe, pca = fitted.steps[-1][1], fitted.named_steps.get("pca")
    weight, bias = probe.coef_[0], float(probe.intercept_[0])
    if pca is not None:  # LDA(PCA(z)) = coef . ((z - mean) @ components.T) + intercept
        weight = pca.components_.T @ weight
        bias -= float(pca.mean_ @ weight)
    return weight, bias


def _scores_of(labels, probabilities) -> dict:
    """accuracy at 0.5, ROC-AUC (None with one class), log loss."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    both = 0 < labels.sum() < len(labels)
    return {"accuracy": float(((probabilities >= 0.5) == labels).mean()) if len(labels) else None,
            "roc_auc": float(roc_auc_score(labels, probabilities)) if both else None,
            "log_loss": float(log_loss(labels, probabilities, labels=[0, 1])) if len(labels) else None,
            "samples": int(len(labels))}


def _held_out_decisions(cv: dict, x) -> "object":
    """Each training sample's decision by the fold fit that held it out, from ``cross_validate``'s estimators
    and test indices (kept as one number a sample: the fits themselves are dropped)."""
    import numpy as np

    decisions = np.empty(len(x))
    for fitted, held_out in zip(cv["estimator"], cv["indices"]["test"]):
        decisions[held_out] = fitted.decision_function(x[held_out])
    return decisions


def _out_of_fold_decisions(pipeline, x, y, groups: Sequence[str], folds):
    """The probe's decision on each training sample from a fit on the folds without it; None when train is too
    small to cross-validate."""
    from sklearn.model_selection import cross_val_predict

    try:
        return cross_val_predict(pipeline, x, y, groups=list(groups), cv=folds, method="decision_function")
    except ValueError:  # a fold whose training part holds one judgement only
        return None


def _temperature(decisions, y) -> tuple[float, dict | str]:
    """The temperature T that calibrates the probe's log-odds (P = sigmoid(decision / T)): the one with the lowest
    log loss on out-of-fold decisions (grouped cross-validation over pairs on train). It changes no verdict at 0.5
    and no ranking; it keeps LDA's log-odds, which reach +-70 on 224 samples, from rounding P(defective) to exactly
    1 in float32, where the ranking that ROC, VD-S and a dev threshold read is lost. T = 1 when train is too small
    to cross-validate (no decisions)."""
    import numpy as np
    from scipy.optimize import minimize_scalar

    if decisions is None:
        return 1.0, "none: too few training samples to cross-validate"
    signs = 2 * np.asarray(y) - 1

    def log_loss(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -signs * decisions / np.exp(log_t))))

    best = minimize_scalar(log_loss, bounds=(-3.0, 8.0), method="bounded")
    return float(np.exp(best.x)), {"on": "out-of-fold decisions, grouped cross-validation over pairs on train",
                                   "log_loss_before": log_loss(0.0), "log_loss_after": float(best.fun)}


def fit_probe(train_x, train_y: Sequence[int], groups: Sequence[str], *, probe: str = "logistic",
              grid: Sequence[float] | None = None, dev_x=None, dev_y: Sequence[int] | None = None,
              choose_on: str = "cv") -> ProbeFit:
    """Standardise, then the ``probe`` (``PROBES``). Its regularisation is the grid's value with the best
    accuracy (ties: the lower log loss, then the stronger regularisation) by cross-validation over whole pairs on
    train (``choose_on="cv"``), or on dev (``"dev"``); the probe is then fitted on all of train. The report holds
    every value's scores, and train's and dev's of the chosen one."""
    import numpy as np
    from sklearn.model_selection import cross_validate

    train_x, train_y = np.asarray(train_x, dtype=np.float64), np.asarray(train_y)
    if len(set(train_y.tolist())) != 2:
        raise InputError("the training split needs both judgements to fit a verdict head", field="judgement")
    if choose_on not in ("cv", "dev"):
        raise ValueError(f"choose_on must be cv or dev, got {choose_on!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    kind = PROBES[probe]
    candidates = tuple(grid) if grid else kind.grid
    has_dev = dev_x is not None and dev_y is not None and len(dev_y) > 0
    if choose_on == "dev" and not has_dev:
        raise InputError(f"choosing {PROBES[probe].parameter} on dev needs a dev split", field="verdict_head_choose_c")
    scores: dict[float, dict] = {}
    held_out: dict[float, object] = {}  # each value's out-of-fold decisions, for the chosen one's calibration
    folds = _grouped_folds(train_y.tolist(), list(groups))
    minority = int(min(train_y.sum(), len(train_y) - train_y.sum()))
    name, flag = kind.parameter, kind.grid_flag
    too_few = (f"too few training samples to choose {name} by cross-validation ({len(train_y)} samples, {minority} "
               f"of the smaller class, {len(set(groups))} pair groups): give a single value ({flag} "
               f"{candidates[-1]:g}) or choose it on dev (--verdict_head_choose_c dev)")
    if choose_on == "cv" and len(candidates) > 1 and (minority < 2 or len(set(groups)) < 3):
        raise InputError(too_few, field=flag.lstrip("-"))
    for value in candidates if len(candidates) > 1 else ():
        if choose_on == "cv":
            try:
                cv = cross_validate(kind.pipeline(value), train_x, train_y, groups=list(groups), cv=folds,
                                    scoring=("accuracy", "neg_log_loss"), error_score="raise",
                                    return_estimator=True, return_indices=True)
            except ValueError:  # a fold whose training part holds one judgement only
                raise InputError(too_few, field=flag.lstrip("-")) from None
            held_out[value] = _held_out_decisions(cv, train_x)
            scores[value] = {"accuracy": float(cv["test_accuracy"].mean()),
                             "log_loss": float(-cv["test_neg_log_loss"].mean())}
        else:
            fitted = kind.pipeline(value).fit(train_x, train_y)
            scores[value] = _scores_of(dev_y, fitted.predict_proba(np.asarray(dev_x, dtype=np.float64))[:, 1])
    stronger = 1 if kind.stronger_when_larger else -1
    best = max(candidates, key=lambda v: (scores[v]["accuracy"], -scores[v]["log_loss"], stronger * v)) \
        if scores else candidates[0]
    fitted = kind.pipeline(best).fit(train_x, train_y)
    decisions = held_out[best] if best in held_out else \
        _out_of_fold_decisions(kind.pipeline(best), train_x, train_y, list(groups), folds)
    temperature, calibration = _temperature(decisions, train_y)
    chosen_on = "cross-validation over pairs on train" if choose_on == "cv" else "dev"
    report = {"probe": probe, "parameter": name, name: best,
              "chosen_on": chosen_on if scores else "given (a single value)",
              "folds": folds.n_splits if choose_on == "cv" and scores else None,
              "grid": [{name: v, **scores[v]} for v in candidates if v in scores],
              "temperature": temperature, "calibration": calibration}
    scaler = fitted.steps[0][1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight, bias = _affine_map(fitted)
    fit = ProbeFit(torch.tensor(scaler.mean_, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32),
                   torch.tensor(weight / temperature, dtype=torch.float32),
                   torch.tensor([bias / temperature], dtype=torch.float32), report)
    # the scores of the head itself (its float32 tensors), as evaluation will compute its P(defective)
    report["train"] = _scores_of(train_y, fit.probabilities(train_x))
    if has_dev:
        report["dev"] = _scores_of(dev_y, fit.probabilities(dev_x))
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


def describe_fit(report: dict) -> str:
    """One line: the probe, its regularisation and how it was chosen, and the scores."""
    def scores(name: str) -> str:
        part = report.get(name) or {}
        if part.get("accuracy") is None:
            return ""
        auc = "n/a" if part.get("roc_auc") is None else f"{part['roc_auc']:.3f}"
        return f"; {name} accuracy {part['accuracy']:.1%} of {part['samples']}, ROC-AUC {auc}"

    name = report.get("parameter", "C")  # heads fitted before the LDA probe existed: logistic, C
    grid = {row[name]: row for row in report.get("grid", [])}
    chosen = grid.get(report.get(name), {})
    cv = f" (accuracy {chosen['accuracy']:.1%} there)" if chosen.get("accuracy") is not None else ""
    temperature = f", temperature {report['temperature']:.3g}" if report.get("temperature") else ""
    return (f"{report.get('probe', 'logistic')} probe, {name} = {report.get(name):g}, chosen by "
            f"{report.get('chosen_on')}{cv}{temperature}{scores('train')}{scores('dev')}")


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
