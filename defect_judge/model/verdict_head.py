"""The verdict head: P(defective) read from the model's hidden states over the prompt, where the model holds it.

A generative judge answers from the last prompt token's top-layer state; a frozen code model holds the
difference between defective and clean code elsewhere, in the mean of its middle layers' states over
the prompt (``tools/probe_features.py`` measures it). The head is a logistic regression on exactly that:

    features = concat over the chosen layers of pool(layer output over the prompt tokens)   [len(layers) * hidden]
    P(defective) = sigmoid(weight · (features - mean) / scale + bias)

``pool`` is ``mean`` (every prompt token) or ``last`` (the last prompt token, where a generative judge
answers). A layer is an index (1 = the first decoder layer's output, depth = the last's, before the final
norm) or a fraction of the depth (0.5: the middle); a spec string names both, ``mean@0.5`` or
``mean@8,12,16,20,24``. The forward pass that computes features stops after the highest layer read: the
layers above it never run.

Fitting (linear probing, LP): scikit-learn's ``StandardScaler`` + ``LogisticRegression`` on frozen features,
C chosen by cross-validation over whole twin pairs on train (``StratifiedGroupKFold``) or on dev. The
scaler's mean/scale and the regression's weights become the head, so the head's P(defective) is the
fitted probe's ``predict_proba`` exactly; fine-tuning (LP-FT, ``train_lora.py``) starts from it.

On disk, beside a model (a checkpoint, the best model, an OUTPUT_DIR)::

    verdict_head.json          spec, layers, pooling, the model's hidden size and depth, the judgements
                               (positive = defective), the base model, and how it was fitted
    verdict_head.safetensors   mean, scale, weight, bias (float32)
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from defect_judge.errors import InputError
from defect_judge.fileio import atomic_open, read_json_object, write_json_atomic

log = logging.getLogger(__name__)

HEAD_CONFIG_FILE = "verdict_head.json"
HEAD_WEIGHTS_FILE = "verdict_head.safetensors"
HEAD_SCHEMA = "defect-judge/verdict-head/v1"
HEAD_MODULE = "verdict_head"  # the head's name as a submodule of the causal LM during training
POOLINGS = ("mean", "last")
TENSORS = ("mean", "scale", "weight", "bias")
DEFAULT_C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
CV_FOLDS = 5
# Features are computed in groups of similar length (little padding) of at most this many tokens.
FEATURE_BATCH_TOKENS_CPU = 4096
FEATURE_BATCH_TOKENS_GPU = 32768
_SPEC_RE = re.compile(r"^(?P<pooling>[a-z]+)@(?P<layers>[0-9.]+(?:,[0-9.]+)*)$")


# ----------------------------------------------------------------------- spec

@dataclass(frozen=True)
class HeadSpec:
    """Which layers the head reads and how it pools them: ``mean@0.5``, ``mean@8,12,16``, ``last@1.0``."""
    pooling: str
    layers: tuple[int | float, ...]  # an int is a layer index (1..depth), a float a fraction of the depth

    @classmethod
    def parse(cls, text: str, *, field: str = "verdict_head") -> "HeadSpec":
        match = _SPEC_RE.match(text.strip())
        if match is None or match.group("pooling") not in POOLINGS:
            raise InputError(f"expected POOLING@LAYERS with POOLING one of {', '.join(POOLINGS)} and LAYERS layer "
                             f"indices (8,12,16) or fractions of the depth (0.5), got {text!r}", field=field)
        layers: list[int | float] = []
        for part in match.group("layers").split(","):
            try:
                value: int | float = float(part) if "." in part else int(part)
            except ValueError:
                raise InputError(f"{part!r} is not a layer index or fraction (in {text!r})", field=field) from None
            if isinstance(value, float) and not 0 < value <= 1:
                raise InputError(f"a layer fraction must be in (0, 1], got {part} (in {text!r})", field=field)
            if isinstance(value, int) and value < 1:
                raise InputError(f"a layer index must be at least 1, got {part} (in {text!r})", field=field)
            layers.append(value)
        return cls(match.group("pooling"), tuple(layers))

    def layer_indices(self, depth: int) -> tuple[int, ...]:
        """Sorted distinct layer indices (1..depth) for a model of ``depth`` decoder layers."""
        indices = set()
        for layer in self.layers:
            if isinstance(layer, float):
                indices.add(min(depth, max(1, round(layer * depth))))
            elif layer > depth:
                raise InputError(f"layer {layer} of {self}: the model has {depth} layers", field="verdict_head")
            else:
                indices.add(layer)
        return tuple(sorted(indices))

    def __str__(self) -> str:
        """The spec as ``parse`` reads it back (a fraction keeps its point: 1.0 is the last layer, 1 the first)."""
        def text(layer: int | float) -> str:
            if isinstance(layer, int):
                return str(layer)
            return f"{layer:g}" if "." in f"{layer:g}" else f"{layer:.1f}"

        return f"{self.pooling}@" + ",".join(text(layer) for layer in self.layers)


# ----------------------------------------------------------------------- head

class VerdictHead(torch.nn.Module):
    """Logistic regression over standardised pooled features; ``forward`` gives the logit of P(defective)."""

    def __init__(self, layers: Sequence[int], pooling: str, hidden_size: int, num_hidden_layers: int, *,
                 positive: str, negative: str, spec: str = "", base_model_path: str = "", fit: dict | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.layers, self.pooling = tuple(int(layer) for layer in layers), pooling
        self.hidden_size, self.num_hidden_layers = int(hidden_size), int(num_hidden_layers)
        self.positive, self.negative = positive, negative
        self.spec = spec or f"{pooling}@" + ",".join(map(str, self.layers))
        self.base_model_path, self.fit = base_model_path, dict(fit or {})
        self.dropout = float(dropout)  # on the standardised features, while training
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(self.dim))
        self.weight = torch.nn.Parameter(torch.zeros(self.dim))
        self.bias = torch.nn.Parameter(torch.zeros(1))  # not 0-d: DeepSpeed broadcasts parameters as byte views

    @property
    def dim(self) -> int:
        return len(self.layers) * self.hidden_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # float32 whatever the model's dtype: a bf16 copy of mean/scale would cost the standardisation its precision
        x = (features.float() - self.mean.float()) / self.scale.float()
        x = F.dropout(x, self.dropout, self.training)
        return x @ self.weight.float() + self.bias.float()

    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """P(defective) of each row of ``features``."""
        with torch.no_grad():
            return torch.sigmoid(self(features))

    def verdicts(self, probabilities: Sequence[float], threshold: float = 0.5) -> list[str]:
        return [self.positive if p >= threshold else self.negative for p in probabilities]

    def config(self) -> dict:
        return {"schema": HEAD_SCHEMA, "spec": self.spec, "layers": list(self.layers), "pooling": self.pooling,
                "hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                "positive": self.positive, "negative": self.negative, "base_model_path": self.base_model_path,
                "fit": self.fit}

    def describe(self) -> str:
        return (f"verdict head {self.spec} (layers {', '.join(map(str, self.layers))} of {self.num_hidden_layers}, "
                f"{self.pooling} over the prompt; P({self.positive}))")

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().float().cpu().contiguous() for name in TENSORS}

    def load_tensors(self, tensors: dict[str, torch.Tensor], *, path: str | os.PathLike | None = None) -> None:
        """Copy saved tensors in, after checking each one's shape (a head of another size is one clear line)."""
        for name in TENSORS:
            if name not in tensors:
                raise InputError(f"no tensor {name!r}", path=path, field=name)
            target = getattr(self, name)
            if tuple(tensors[name].shape) != tuple(target.shape):
                raise InputError(f"tensor {name!r} has shape {tuple(tensors[name].shape)}, expected "
                                 f"{tuple(target.shape)} for {len(self.layers)} layer(s) of hidden size "
                                 f"{self.hidden_size}", path=path, field=name)
            with torch.no_grad():
                target.copy_(tensors[name].to(target.dtype))

    def check_fits(self, model_config, *, path: str | os.PathLike | None = None) -> None:
        """Refuse a head fitted for a model of another shape (hidden size, depth)."""
        hidden, depth = int(model_config.hidden_size), int(model_config.num_hidden_layers)
        if (hidden, depth) != (self.hidden_size, self.num_hidden_layers):
            raise InputError(f"the head was fitted for a model of hidden size {self.hidden_size} and "
                             f"{self.num_hidden_layers} layers, this model has hidden size {hidden} and {depth} "
                             f"layers: fit a head for this model", path=path, field="hidden_size")

    def save(self, folder: str | os.PathLike, tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the two files into ``folder`` (atomically each); ``tensors`` overrides the module's own
        (a DeepSpeed state dict gathered from the ranks)."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in (tensors or self.state_tensors()).items()}
        with atomic_open(folder / HEAD_WEIGHTS_FILE, "wb") as handle:
            handle.write(save(tensors, metadata={"format": "pt", "schema": HEAD_SCHEMA}))
        write_json_atomic(folder / HEAD_CONFIG_FILE, self.config())
        return folder


def has_head(folder: str | os.PathLike | None) -> bool:
    return folder is not None and (Path(folder) / HEAD_CONFIG_FILE).is_file()


def head_folder(path: str | os.PathLike) -> Path:
    """The folder holding a head: ``path`` itself, or the folder of a ``verdict_head.json`` / ``.safetensors``."""
    path = Path(path)
    if path.name in (HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE):
        path = path.parent
    if not path.exists():
        raise InputError("verdict head not found", path=path, field="verdict_head")
    if not has_head(path):
        raise InputError(f"no {HEAD_CONFIG_FILE} here: not a verdict head", path=path, field="verdict_head")
    return path


def load_head(path: str | os.PathLike) -> VerdictHead:
    """The head saved in ``path`` (a folder, or either of its files); a corrupt or inconsistent one is an
    InputError naming the file and field."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = head_folder(path)
    config_path, weights_path = folder / HEAD_CONFIG_FILE, folder / HEAD_WEIGHTS_FILE
    config = read_json_object(config_path)
    if config.get("schema") != HEAD_SCHEMA:
        raise InputError(f"not a verdict head of this toolkit (schema {config.get('schema')!r}, expected "
                         f"{HEAD_SCHEMA!r})", path=config_path, field="schema")
    for name, kind in (("layers", list), ("pooling", str), ("hidden_size", int), ("num_hidden_layers", int),
                       ("positive", str), ("negative", str)):
        if not isinstance(config.get(name), kind) or isinstance(config.get(name), bool):
            raise InputError(f"must be a {kind.__name__}", path=config_path, field=name)
    if not config["layers"] or not all(isinstance(l, int) and 1 <= l <= config["num_hidden_layers"]
                                       for l in config["layers"]):
        raise InputError(f"must be layer indices between 1 and {config['num_hidden_layers']}", path=config_path,
                         field="layers")
    if config["pooling"] not in POOLINGS:
        raise InputError(f"must be one of {', '.join(POOLINGS)}", path=config_path, field="pooling")
    head = VerdictHead(config["layers"], config["pooling"], config["hidden_size"], config["num_hidden_layers"],
                       positive=config["positive"], negative=config["negative"], spec=str(config.get("spec") or ""),
                       base_model_path=str(config.get("base_model_path") or ""), fit=config.get("fit") or {})
    if not weights_path.is_file():
        raise InputError(f"{HEAD_CONFIG_FILE} without its weights", path=weights_path)
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"cannot read the head's weights ({str(error).splitlines()[0]}); is the file truncated or "
                         f"corrupt?", path=weights_path) from None
    head.load_tensors(tensors, path=weights_path)
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise InputError("the head's weights hold NaN or infinite values", path=weights_path)
    return head


# ------------------------------------------------------------------- features

def causal_lm(model) -> torch.nn.Module:
    """The causal LM inside a DeepSpeed engine, DDP or a peft wrapper."""
    while True:
        if isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def decoder_layers(model) -> torch.nn.ModuleList:
    decoder = causal_lm(model).get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise InputError(f"{type(decoder).__name__} has no list of decoder layers (.layers): the verdict head "
                         f"cannot read its hidden states")
    return layers


class _StopForward(Exception):
    """Raised by the last tap to end a forward pass whose upper layers no one reads."""


class LayerTap(contextlib.AbstractContextManager):
    """Keeps the outputs of chosen decoder layers (1-based) during a forward pass; with ``stop`` the pass
    ends right after the highest of them (use ``run``)."""

    def __init__(self, model, layers: Sequence[int], *, stop: bool = False):
        self.model, self.layers, self.stop = model, tuple(layers), stop
        self.states: dict[int, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "LayerTap":
        modules = decoder_layers(self.model)
        top = max(self.layers)
        for layer in self.layers:
            self._handles.append(modules[layer - 1].register_forward_hook(self._hook(layer, top)))
        return self

    def _hook(self, layer: int, top: int):
        def hook(module, args, output):
            self.states[layer] = output[0] if isinstance(output, tuple) else output
            if self.stop and layer == top:
                raise _StopForward

        return hook

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def run(self, **forward_kwargs) -> list[torch.Tensor]:
        """The tapped layers' outputs, in layer order, of ``model(**forward_kwargs)``."""
        self.states.clear()
        try:
            self.model(**forward_kwargs)
        except _StopForward:
            pass
        return [self.states[layer] for layer in self.layers]


def pool(states: Sequence[torch.Tensor], mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, len(states) * hidden] float32: each state [batch, seq, hidden] pooled over the positions
    where ``mask`` [batch, seq] is true (the prompt's tokens), then concatenated."""
    mask = mask.to(states[0].device).bool()
    if pooling == "mean":
        weights = mask.unsqueeze(-1).float()
        count = weights.sum(1).clamp(min=1.0)
        return torch.cat([(state.float() * weights).sum(1) / count for state in states], dim=-1)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask, positions, torch.full_like(positions, -1)).max(1).values.clamp(min=0)
        rows = torch.arange(mask.shape[0], device=mask.device)
        return torch.cat([state[rows, last].float() for state in states], dim=-1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def _length_groups(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Indices, longest first, in the low-padding groups evaluation prefills in (``inference.prefill_groups``),
    each of at most ``budget`` padded tokens."""
    from defect_judge.model.inference import prefill_groups

    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for run in prefill_groups([lengths[i] for i in order], max_tokens=budget):
        yield [order[i] for i in run]


def pooled_prompt_features(model, prompts: Sequence[Sequence[int]], layers: Sequence[int], poolings: Sequence[str],
                           *, batch_tokens: int | None = None, progress: bool = False,
                           desc: str = "features") -> dict[str, torch.Tensor]:
    """{pooling: [len(prompts), len(layers) * hidden] float32} (on the CPU, in the order of ``prompts``): each
    prompt's token ids run through the model up to its highest tapped layer, right-padded in length groups."""
    from tqdm.auto import tqdm

    device = next(causal_lm(model).parameters()).device
    budget = batch_tokens or (FEATURE_BATCH_TOKENS_GPU if device.type == "cuda" else FEATURE_BATCH_TOKENS_CPU)
    rows: dict[str, list] = {pooling: [None] * len(prompts) for pooling in poolings}
    with torch.inference_mode(), LayerTap(model, layers, stop=True) as tap, \
            tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress, leave=False) as bar:
        for group in _length_groups([len(p) for p in prompts], budget):
            width = max(len(prompts[i]) for i in group)
            input_ids = torch.zeros((len(group), width), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, index in enumerate(group):
                input_ids[row, :len(prompts[index])] = torch.tensor(list(prompts[index]), dtype=torch.long)
                mask[row, :len(prompts[index])] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            states = tap.run(input_ids=input_ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
            for pooling in poolings:
                features = pool(states, mask, pooling).cpu()
                for row, index in enumerate(group):
                    rows[pooling][index] = features[row]
            bar.update(len(group))
    width = len(layers) * causal_lm(model).config.hidden_size
    return {pooling: torch.stack(found) if found else torch.zeros((0, width)) for pooling, found in rows.items()}


def prompt_features(model, prompts: Sequence[Sequence[int]], layers: Sequence[int], pooling: str,
                    **kwargs) -> torch.Tensor:
    """[len(prompts), len(layers) * hidden] float32: the head's input for each prompt (token ids)."""
    return pooled_prompt_features(model, prompts, layers, (pooling,), **kwargs)[pooling]


def head_probabilities(model, head: VerdictHead, prompts: Sequence[Sequence[int]], **kwargs) -> list[float]:
    """P(defective) of each prompt (token ids, as evaluation renders them)."""
    features = prompt_features(model, prompts, head.layers, head.pooling, **kwargs)
    return [float(p) for p in head.probabilities(features)]


# ------------------------------------------------------------------------ fit

@dataclass(frozen=True)
class ProbeFit:
    """A fitted probe as the head's tensors, and how it was chosen."""
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    report: dict


def _grouped_folds(labels, groups) -> "object":
    from sklearn.model_selection import StratifiedGroupKFold

    splits = max(2, min(CV_FOLDS, len(set(groups)), int(min(sum(labels), len(labels) - sum(labels)))))
    return StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=0)


def _pipeline(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


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


def fit_probe(train_x, train_y: Sequence[int], groups: Sequence[str], *, c_grid: Sequence[float] = DEFAULT_C_GRID,
              dev_x=None, dev_y: Sequence[int] | None = None, choose_on: str = "cv") -> ProbeFit:
    """Standardise, then logistic regression. C is the one with the best accuracy (ties: the lower log loss)
    by cross-validation over whole pairs on train (``choose_on="cv"``), or on dev (``"dev"``); the probe is
    then fitted on all of train. The report holds every C's scores, and train's and dev's of the chosen one."""
    import numpy as np
    from sklearn.model_selection import cross_validate

    train_x, train_y = np.asarray(train_x, dtype=np.float64), np.asarray(train_y)
    if len(set(train_y.tolist())) != 2:
        raise InputError("the training split needs both judgements to fit a verdict head", field="judgement")
    if choose_on not in ("cv", "dev"):
        raise ValueError(f"choose_on must be cv or dev, got {choose_on!r}")
    has_dev = dev_x is not None and dev_y is not None and len(dev_y) > 0
    if choose_on == "dev" and not has_dev:
        raise InputError("choosing C on dev needs a dev split", field="verdict_head_choose_c")
    grid: dict[float, dict] = {}
    folds = _grouped_folds(train_y.tolist(), list(groups))
    minority = int(min(train_y.sum(), len(train_y) - train_y.sum()))
    too_few = (f"too few training samples to choose C by cross-validation ({len(train_y)} samples, {minority} of the "
               f"smaller class, {len(set(groups))} pair groups): give a single C (--verdict_head_c_grid 0.1) or "
               f"choose it on dev (--verdict_head_choose_c dev)")
    if choose_on == "cv" and len(c_grid) > 1 and (minority < 2 or len(set(groups)) < 3):
        raise InputError(too_few, field="verdict_head_c_grid")
    for c in c_grid if len(c_grid) > 1 else ():
        if choose_on == "cv":
            try:
                cv = cross_validate(_pipeline(c), train_x, train_y, groups=list(groups), cv=folds,
                                    scoring=("accuracy", "neg_log_loss"), error_score="raise")
            except ValueError:  # a fold whose training part holds one judgement only
                raise InputError(too_few, field="verdict_head_c_grid") from None
            grid[c] = {"accuracy": float(cv["test_accuracy"].mean()), "log_loss": float(-cv["test_neg_log_loss"].mean())}
        else:
            fitted = _pipeline(c).fit(train_x, train_y)
            grid[c] = _scores_of(dev_y, fitted.predict_proba(np.asarray(dev_x, dtype=np.float64))[:, 1])
    best = max(c_grid, key=lambda c: (grid[c]["accuracy"], -grid[c]["log_loss"], -c)) if grid else c_grid[0]
    fitted = _pipeline(best).fit(train_x, train_y)
    scaler, regression = fitted.steps[0][1], fitted.steps[1][1]
    chosen_on = "cross-validation over pairs on train" if choose_on == "cv" else "dev"
    report = {"C": best, "chosen_on": chosen_on if grid else "given (a single value)",
              "folds": folds.n_splits if choose_on == "cv" and grid else None,
              "grid": [{"C": c, **grid[c]} for c in c_grid if c in grid],
              "train": _scores_of(train_y, fitted.predict_proba(train_x)[:, 1])}
    if has_dev:
        report["dev"] = _scores_of(dev_y, fitted.predict_proba(np.asarray(dev_x, dtype=np.float64))[:, 1])
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return ProbeFit(torch.tensor(scaler.mean_, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32),
                    torch.tensor(regression.coef_[0], dtype=torch.float32),
                    torch.tensor([float(regression.intercept_[0])], dtype=torch.float32), report)


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
    """One line: C, how it was chosen, and the scores."""
    def scores(name: str) -> str:
        part = report.get(name) or {}
        if part.get("accuracy") is None:
            return ""
        auc = "n/a" if part.get("roc_auc") is None else f"{part['roc_auc']:.3f}"
        return f"; {name} accuracy {part['accuracy']:.1%} of {part['samples']}, ROC-AUC {auc}"

    grid = {row["C"]: row for row in report.get("grid", [])}
    chosen = grid.get(report.get("C"), {})
    cv = f" (accuracy {chosen['accuracy']:.1%} there)" if chosen.get("accuracy") is not None else ""
    return f"C = {report.get('C'):g}, chosen by {report.get('chosen_on')}{cv}{scores('train')}{scores('dev')}"
