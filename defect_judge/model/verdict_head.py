"""The verdict head: P(defective) read from the model's hidden states over the prompt, where the model holds it.

A generative judge answers from the last prompt token's top-layer state; a frozen code model holds the
difference between defective and clean code elsewhere, in the mean of its middle layers' states over
the prompt (``tools/probe_features.py`` measures it). The head is a logistic regression on exactly that:

    features = concat over the chosen layers of pool(layer output over the prompt tokens)   [len(layers) * hidden]
    P(defective) = sigmoid(weight · (features - mean) / scale + bias)

``pool`` is ``mean`` (every prompt token) or ``last`` (the last prompt token, where a generative judge
answers). A layer is an index (1 = the first decoder layer's output, depth = the last's, before the final
norm) or a fraction of the depth (0.5: the middle); a spec string names both, ``mean@0.5`` or
``mean@8,12,16,20,24``. The features are computed by ``hidden_states.py``, whose forward pass stops after
the highest layer read: the layers above it never run.

Fitting (linear probing, LP) is ``train/linear_probe.py``'s: the fitted probe's scaler mean/scale and
regression weights, divided by a temperature calibrated on out-of-fold decisions, become the head, so the head's
P(defective) is the fitted probe's at that temperature (the same verdicts and ranking, calibrated probabilities);
fine-tuning (LP-FT, ``train_lora.py``) starts from it. A head that ``reads_base`` stays the probe as fitted and
reads the base model, the LoRA adapter switched off (``adapter_disabled``), in training and in evaluation: the
adapter then may change any layer to write the answer without moving the features the head was fitted on.

On disk, beside a model (a checkpoint, the best model, an OUTPUT_DIR)::

    verdict_head.json          spec, layers, pooling, the model's hidden size and depth, the judgements
                               (positive = defective), the base model, whether it reads the base model, how
                               it was fitted, and the training run's judge card (``judge_card.py``)
    verdict_head.safetensors   mean, scale, weight, bias (float32)
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from defect_judge.errors import InputError
from defect_judge.fileio import atomic_open, read_json_object, write_json_atomic
from defect_judge.model.head_files import HEAD_CONFIG_FILE, HEAD_WEIGHTS_FILE, has_head
from defect_judge.model.hidden_states import POOLINGS, prompt_features
from defect_judge.model.judge_card import CARD_KEY

HEAD_SCHEMA = "defect-judge/verdict-head/v1"
HEAD_MODULE = "verdict_head"  # the head's name as a submodule of the causal LM during training
TENSORS = ("mean", "scale", "weight", "bias")
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

def head_logits(features: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, *, dropout: float = 0.0) -> torch.Tensor:
    """The head's formula, in the tensors' own dtype: weight · dropout((features - mean) / scale) + bias, the
    logit of P(defective) of each row. The fitted probe's scores (float64) and the head's (float32) both come
    from here."""
    standardised = (features - mean) / scale
    if dropout:
        standardised = F.dropout(standardised, dropout, training=True)
    return standardised @ weight + bias


class VerdictHead(torch.nn.Module):
    """Logistic regression over standardised pooled features; ``forward`` gives the logit of P(defective)."""

    def __init__(self, layers: Sequence[int], pooling: str, hidden_size: int, num_hidden_layers: int, *,
                 positive: str, negative: str, spec: str = "", base_model_path: str = "", fit: dict | None = None,
                 dropout: float = 0.0, reads_base: bool = False, card: dict | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.layers, self.pooling = tuple(int(layer) for layer in layers), pooling
        self.hidden_size, self.num_hidden_layers = int(hidden_size), int(num_hidden_layers)
        self.positive, self.negative = positive, negative
        self.spec = spec or f"{pooling}@" + ",".join(map(str, self.layers))
        self.base_model_path, self.fit = base_model_path, dict(fit or {})
        self.dropout = float(dropout)  # on the standardised features, while training
        self.reads_base = bool(reads_base)  # the base model's states, with the adapter off
        self.card = card  # the judge card of the training run (model/judge_card.py), saved with the head
        self.register_buffer("mean", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(self.dim))
        self.weight = torch.nn.Parameter(torch.zeros(self.dim))
        self.bias = torch.nn.Parameter(torch.zeros(1))  # not 0-d: DeepSpeed broadcasts parameters as byte views

    @property
    def dim(self) -> int:
        return len(self.layers) * self.hidden_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # float32 whatever the model's dtype: a bf16 copy of mean/scale would cost the standardisation its precision
        return head_logits(features.float(), self.mean.float(), self.scale.float(), self.weight.float(),
                           self.bias.float(), dropout=self.dropout if self.training else 0.0)

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
                "reads_base": self.reads_base, "fit": self.fit} | ({CARD_KEY: self.card} if self.card else {})

    def describe(self) -> str:
        where = "the base model's " if self.reads_base else ""
        return (f"verdict head {self.spec} ({where}layers {', '.join(map(str, self.layers))} of "
                f"{self.num_hidden_layers}, {self.pooling} over the prompt; P({self.positive}))")

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
    if not isinstance(config.get("reads_base", False), bool):
        raise InputError("must be true or false", path=config_path, field="reads_base")
    head = VerdictHead(config["layers"], config["pooling"], config["hidden_size"], config["num_hidden_layers"],
                       positive=config["positive"], negative=config["negative"], spec=str(config.get("spec") or ""),
                       base_model_path=str(config.get("base_model_path") or ""), fit=config.get("fit") or {},
                       reads_base=config.get("reads_base", False), card=config.get(CARD_KEY))
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


# ---------------------------------------------------------------- probabilities

@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[None]:
    """Inside it, ``model``'s LoRA (any peft tuner) layers are off: the model computes as its base model. A
    model with no adapter (or one merged into its weights) is unchanged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    switched = [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters]
    trainable = {p: p.requires_grad for m in switched for p in m.parameters()}  # peft's switch resets them
    for module in switched:
        module.enable_adapters(False)
    try:
        yield
    finally:
        for module in switched:
            module.enable_adapters(True)
        for parameter, requires_grad in trainable.items():
            parameter.requires_grad_(requires_grad)


def head_probabilities(model, head: VerdictHead, prompts: Sequence[Sequence[int]], **kwargs) -> list[float]:
    """P(defective) of each prompt (token ids, as evaluation renders them); a head that ``reads_base`` reads
    ``model`` with its adapter off, so the adapter must not be merged into it."""
    with adapter_disabled(model) if head.reads_base else contextlib.nullcontext():
        features = prompt_features(model, prompts, head.layers, head.pooling, **kwargs)
    return [float(p) for p in head.probabilities(features)]
