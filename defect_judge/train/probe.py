"""The linear probe's maths: scikit-learn on frozen features, fitted, its regularisation chosen, its log-odds
calibrated and scored; no model, no ranks, no script's settings.

``calibrated_probe`` fits ``StandardScaler``, then one of two linear probes (``PROBES``), its regularisation
chosen by cross-validation over whole twin pairs on train (``StratifiedGroupKFold``) or on dev:

- ``logistic``: ``LogisticRegression``, regularised by C;
- ``lda``: ``LinearDiscriminantAnalysis`` with shrinkage, on the training features' principal components
  (``PCA``, all of them: with fewer samples than dimensions this loses nothing the classifier can use, and the
  covariance it inverts is samples x samples instead of dimensions x dimensions). It weighs each direction by how
  little the code's content moves it: the mean over a prompt varies most with what the code is about, and the
  difference between a defective function and its fixed twin lies in directions that vary little. On the shipped
  split, by nested cross-validation over train + dev, it is right about 2-3 points more often than logistic
  regression on the same layers (instruct_fine_tuning/readme.md, "The verdict head").

The fitted pipeline becomes one affine map on the standardised features (LDA's principal components folded into
its weights), divided by a temperature calibrated on out-of-fold decisions, so P(defective) means what it says and
never rounds to 1: the same verdicts at 0.5, the same ranking. ``linear_probe.py`` turns it into the verdict head's
tensors. Data a probe cannot be fitted on raises ``ProbeDataError`` in words that name no setting: the script that
reports it names its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from defect_judge.evaluate.metrics import verdict_scores

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
    parameter: str                       # the regularisation's name in the report
    grid: tuple[float, ...]              # the default candidates
    stronger_when_larger: bool           # ties in the choice go to the stronger regularisation
    pipeline: Callable[[float], object]  # scikit-learn's pipeline for one value of the parameter
    valid: Callable[[float], bool]       # a value the pipeline accepts
    valid_text: str                      # ... said in words

    def grid_problem(self, grid: Sequence[float]) -> str | None:
        """What is wrong with ``grid`` as this probe's candidates (none, or a value it cannot take), said to follow
        the name of the caller's setting; None when nothing is."""
        if not grid or not all(self.valid(value) for value in grid):
            return f"must be {self.valid_text}, got {list(grid)}"
        return None


PROBES = {kind.name: kind for kind in (
    ProbeKind("logistic", "C", DEFAULT_C_GRID, False, _logistic_pipeline, lambda c: c > 0, "positive numbers"),
    ProbeKind("lda", "shrinkage", DEFAULT_SHRINKAGE_GRID, True, _lda_pipeline, lambda s: 0 <= s <= 1,
              "numbers in [0, 1]"),
)}


def probe_grid(probe: str, c_grid: Sequence[float], shrinkage_grid: Sequence[float]) -> Sequence[float]:
    """Of a script's two grid settings, the one ``probe`` is regularised by: C for logistic, shrinkage for lda."""
    return {"logistic": c_grid, "lda": shrinkage_grid}[probe]


class ProbeDataError(ValueError):
    """Data a probe cannot be fitted on, in words that name no setting. ``setting`` says what would change it:
    ``judgement`` (the training split's judgements), ``choose_on`` (where the regularisation is chosen) or
    ``grid`` (its candidates; ``value`` is the one to give alone)."""

    def __init__(self, message: str, setting: str, value: float | None = None):
        super().__init__(message)
        self.setting, self.value = setting, value


@dataclass(frozen=True)
class CalibratedProbe:
    """A fitted probe as one affine map of standardised features, its log-odds calibrated:
    P(defective) = sigmoid(weight . (features - mean) / scale + bias); and the report of how it was chosen."""
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    report: dict


def has_dev_split(dev_x, dev_y) -> bool:
    return dev_x is not None and dev_y is not None and len(dev_y) > 0


def training_set(train_x, train_y) -> tuple[np.ndarray, np.ndarray]:
    """The training features (float64) and labels; ProbeDataError unless both judgements are there."""
    x, y = np.asarray(train_x, dtype=np.float64), np.asarray(train_y)
    if len(set(y.tolist())) != 2:
        raise ProbeDataError("the training split needs both judgements to fit a verdict head", "judgement")
    return x, y


def probe_kind(probe: str, choose_on: str, has_dev: bool) -> ProbeKind:
    """The probe named ``probe``, its regularisation to be chosen ``choose_on`` ("cv" or "dev")."""
    if choose_on not in ("cv", "dev"):
        raise ValueError(f"choose_on must be cv or dev, got {choose_on!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    if choose_on == "dev" and not has_dev:
        raise ProbeDataError(f"choosing {PROBES[probe].parameter} on dev needs a dev split", "choose_on")
    return PROBES[probe]


def grouped_folds(labels: Sequence[int], groups: Sequence[str]) -> "object":
    """Stratified folds that keep each group (a twin pair) on one side, as many as the data allows (2 to 5)."""
    from sklearn.model_selection import StratifiedGroupKFold

    splits = max(2, min(CV_FOLDS, len(set(groups)), int(min(sum(labels), len(labels) - sum(labels)))))
    return StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=0)


def affine_map(fitted) -> tuple[np.ndarray, float]:
    """The fitted pipeline's decision function on the scaler's output, as weight and bias: logistic
    regression's own, or LDA's composed with the principal components it was fitted on."""
    probe, pca = fitted.steps[-1][1], fitted.named_steps.get("pca")
    weight, bias = probe.coef_[0], float(probe.intercept_[0])
    if pca is not None:  # LDA(PCA(z)) = coef . ((z - mean) @ components.T) + intercept
        weight = pca.components_.T @ weight
        bias -= float(pca.mean_ @ weight)
    return weight, bias


def held_out_decisions(cv: dict, x) -> np.ndarray:
    """Each training sample's decision by the fold fit that held it out, from ``cross_validate``'s estimators
    and test indices (kept as one number a sample: the fits themselves are dropped)."""
    decisions = np.empty(len(x))
    for fitted, held_out in zip(cv["estimator"], cv["indices"]["test"]):
        decisions[held_out] = fitted.decision_function(x[held_out])
    return decisions


def out_of_fold_decisions(pipeline, x, y, groups: Sequence[str], folds) -> np.ndarray | None:
    """The probe's decision on each training sample from a fit on the folds without it; None when train is too
    small to cross-validate."""
    from sklearn.model_selection import cross_val_predict

    try:
        return cross_val_predict(pipeline, x, y, groups=list(groups), cv=folds, method="decision_function")
    except ValueError:  # a fold whose training part holds one judgement only
        return None


def cross_validated_scores(kind: ProbeKind, candidates: Sequence[float], x, y, groups: Sequence[str],
                           folds) -> tuple[dict[float, dict], dict[float, np.ndarray]]:
    """Each candidate's accuracy and log loss by cross-validation over whole pairs on train, and its out-of-fold
    decisions (for the chosen one's calibration); ProbeDataError when train is too small for it."""
    from sklearn.model_selection import cross_validate

    minority = int(min(y.sum(), len(y) - y.sum()))
    too_few = ProbeDataError(f"too few training samples to choose {kind.parameter} by cross-validation ({len(y)} "
                             f"samples, {minority} of the smaller class, {len(set(groups))} pair groups)", "grid",
                             candidates[-1])
    if minority < 2 or len(set(groups)) < 3:
        raise too_few
    scores: dict[float, dict] = {}
    held_out: dict[float, np.ndarray] = {}
    for value in candidates:
        try:
            cv = cross_validate(kind.pipeline(value), x, y, groups=list(groups), cv=folds,
                                scoring=("accuracy", "neg_log_loss"), error_score="raise",
                                return_estimator=True, return_indices=True)
        except ValueError:  # a fold whose training part holds one judgement only
            raise too_few from None
        held_out[value] = held_out_decisions(cv, x)
        scores[value] = {"accuracy": float(cv["test_accuracy"].mean()),
                         "log_loss": float(-cv["test_neg_log_loss"].mean())}
    return scores, held_out


def dev_scores(kind: ProbeKind, candidates: Sequence[float], x, y, dev_x, dev_y) -> dict[float, dict]:
    """Each candidate fitted on train, scored on dev (``verdict_scores``)."""
    dev_x = np.asarray(dev_x, dtype=np.float64)
    return {value: verdict_scores(dev_y, kind.pipeline(value).fit(x, y).predict_proba(dev_x)[:, 1])
            for value in candidates}


def chosen_value(kind: ProbeKind, candidates: Sequence[float], scores: dict[float, dict]) -> float:
    """The candidate with the best accuracy (ties: the lower log loss, then the stronger regularisation); the
    only one when none was scored."""
    if not scores:
        return candidates[0]
    stronger = 1 if kind.stronger_when_larger else -1
    return max(candidates, key=lambda v: (scores[v]["accuracy"], -scores[v]["log_loss"], stronger * v))


def temperature(decisions, y) -> tuple[float, dict | str]:
    """The temperature T that calibrates the probe's log-odds (P = sigmoid(decision / T)): the one with the lowest
    log loss on out-of-fold decisions (grouped cross-validation over pairs on train). It changes no verdict at 0.5
    and no ranking; it keeps LDA's log-odds, which reach +-70 on 224 samples, from rounding P(defective) to exactly
    1 in float32, where the ranking that ROC, VD-S and a dev threshold read is lost. T = 1 when train is too small
    to cross-validate (no decisions)."""
    from scipy.optimize import minimize_scalar

    if decisions is None:
        return 1.0, "none: too few training samples to cross-validate"
    signs = 2 * np.asarray(y) - 1

    def log_loss(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -signs * decisions / np.exp(log_t))))

    best = minimize_scalar(log_loss, bounds=(-3.0, 8.0), method="bounded")
    return float(np.exp(best.x)), {"on": "out-of-fold decisions, grouped cross-validation over pairs on train",
                                   "log_loss_before": log_loss(0.0), "log_loss_after": float(best.fun)}


def calibrated_probe(train_x, train_y: Sequence[int], groups: Sequence[str], *, probe: str = "logistic",
                     grid: Sequence[float] | None = None, dev_x=None, dev_y: Sequence[int] | None = None,
                     choose_on: str = "cv") -> CalibratedProbe:
    """Standardise, then the ``probe`` (``PROBES``). Its regularisation is the grid's value with the best
    accuracy (ties: the lower log loss, then the stronger regularisation) by cross-validation over whole pairs on
    train (``choose_on="cv"``), or on dev (``"dev"``); the probe is then fitted on all of train and its log-odds
    calibrated. The report holds every value's scores, the choice and the calibration."""
    x, y = training_set(train_x, train_y)
    has_dev = has_dev_split(dev_x, dev_y)
    kind = probe_kind(probe, choose_on, has_dev)
    candidates = tuple(grid) if grid else kind.grid
    folds = grouped_folds(y.tolist(), list(groups))
    held_out: dict[float, np.ndarray] = {}
    scores: dict[float, dict] = {}
    if len(candidates) > 1 and choose_on == "cv":
        scores, held_out = cross_validated_scores(kind, candidates, x, y, groups, folds)
    elif len(candidates) > 1:
        scores = dev_scores(kind, candidates, x, y, dev_x, dev_y)
    best = chosen_value(kind, candidates, scores)
    fitted = kind.pipeline(best).fit(x, y)
    decisions = held_out[best] if best in held_out else \
        out_of_fold_decisions(kind.pipeline(best), x, y, list(groups), folds)
    t, calibration = temperature(decisions, y)
    name = kind.parameter
    chosen_on = "cross-validation over pairs on train" if choose_on == "cv" else "dev"
    report = {"probe": probe, "parameter": name, name: best,
              "chosen_on": chosen_on if scores else "given (a single value)",
              "folds": folds.n_splits if choose_on == "cv" and scores else None,
              "grid": [{name: v, **scores[v]} for v in candidates if v in scores],
              "temperature": t, "calibration": calibration}
    scaler = fitted.steps[0][1]
    weight, bias = affine_map(fitted)
    return CalibratedProbe(scaler.mean_, np.where(scaler.scale_ > 0, scaler.scale_, 1.0), weight / t, bias / t,
                           report)


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
