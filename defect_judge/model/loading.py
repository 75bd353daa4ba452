"""Loading models and tokenizers safely and with clear errors.

Weights are read as safetensors only (pickle checkpoints can run code) unless
the caller allows otherwise, and ``trust_remote_code`` is off unless asked for.
"""
from __future__ import annotations

import contextlib
import json
import logging
import pickle
import warnings
from pathlib import Path
from typing import Iterator

from defect_judge.errors import InputError, RunError
from defect_judge.model.chat import require_chat_template

log = logging.getLogger(__name__)

ADAPTER_CONFIG_FILE = "adapter_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@contextlib.contextmanager
def quiet_library_deprecations() -> Iterator[None]:
    """Silence deprecation warnings one library raises by calling another's old API (peft reading
    transformers' ``is_gradient_checkpointing``): they print on every run and nobody using the toolkit can act on them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def pick_dtype(device: str | None = None):
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def has_safetensors_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))


def check_model_folder(path: str | Path, *, allow_pickle: bool = False) -> Path:
    """The folder holds a config and loadable weights, or a clear error says what is missing."""
    folder = Path(path)
    if not folder.exists():
        raise InputError("model path does not exist", path=folder)
    if not folder.is_dir():
        raise InputError("model path is not a folder", path=folder)
    if not (folder / "config.json").is_file():
        raise InputError("no config.json: not a Hugging Face model folder", path=folder)
    if has_safetensors_weights(folder):
        return folder
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and allow_pickle:
        return folder
    if pickles:
        raise InputError(f"only pickle weights ({', '.join(pickles[:3])}): refusing to load them since pickle can run "
                         f"code; convert them to safetensors, or pass --allow_pickle for a folder you trust", path=folder)
    raise InputError("no model weights (*.safetensors) in the folder", path=folder)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False, require_template: bool = True):
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise InputError("tokenizer path does not exist", path=path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"cannot load a tokenizer: {str(error).splitlines()[0]}", path=path) from None
    if require_template:
        require_chat_template(tokenizer, str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str | Path, *, dtype=None, trust_remote_code: bool = False, allow_pickle: bool = False):
    """An ``AutoModelForCausalLM`` from a checked folder; unreadable weights are an InputError."""
    from transformers import AutoModelForCausalLM

    folder = check_model_folder(path, allow_pickle=allow_pickle)
    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype if dtype is not None else pick_dtype(),
                                                    trust_remote_code=trust_remote_code,
                                                    use_safetensors=not allow_pickle or None)
    except Exception as error:  # safetensors/transformers raise many types for a corrupt file
        code = _shipped_code(folder)
        if code and not trust_remote_code:
            raise InputError(f"the model needs code shipped in its folder ({code}), which is not run by default; "
                             f"pass --trust_remote_code only if you trust this folder", path=folder) from None
        raise InputError(weights_error_message(error), path=folder) from None


def weights_error_message(error: Exception) -> str:
    """One line on why weights did not load; a pickle the weights-only unpickler refused gets its own words."""
    import pickle

    if isinstance(error, pickle.UnpicklingError):
        return ("the pickle weights hold objects other than tensors, which torch's weights-only loader refuses "
                "(they could run code); convert the checkpoint to safetensors where it was made")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot load the model weights ({type(error).__name__}: {first_line}); is a file truncated or corrupt?"


def _shipped_code(folder: Path) -> str:
    """The classes config.json maps to code files of the folder (its ``auto_map``), or ''."""
    try:
        auto_map = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    return ", ".join(str(v) for v in auto_map.values()) if isinstance(auto_map, dict) else str(auto_map)


def check_tokenizer_matches(model, tokenizer, model_path: str | Path, tokenizer_path: str | Path) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding table."""
    weight = model.get_input_embeddings().weight
    rows = (getattr(weight, "ds_shape", None) or weight.shape)[0]  # DeepSpeed ZeRO-3 partitions it: shape is (0,)
    ids = [tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer) - 1]
    if any(i is not None and i >= rows for i in ids):
        raise InputError(f"the tokenizer at {tokenizer_path} ({len(tokenizer)} tokens) does not match the model at "
                         f"{model_path} ({rows} embedding rows); use the model's own tokenizer", path=tokenizer_path)


def inference_model(weights_path: Path, *, adapter_base: Path | None = None, dtype, device: str,
                    trust_remote_code: bool = False, allow_pickle: bool = False, merge: bool = True):
    """The model ready for inference (eval mode, on ``device``): the model in ``weights_path``, or the LoRA adapter
    there on its base model ``adapter_base``, merged into it, or with ``merge=False`` beside it, so that
    ``verdict_head.adapter_disabled`` can switch it off. Every script's judge loads its model here
    (``paths.resolve_model`` says which folders)."""
    if adapter_base is None:
        return load_causal_lm(weights_path, dtype=dtype, trust_remote_code=trust_remote_code,
                              allow_pickle=allow_pickle).to(device).eval()
    import torch
    from peft import PeftModel

    base = load_causal_lm(adapter_base, dtype=dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    try:
        with quiet_library_deprecations():
            adapted = PeftModel.from_pretrained(base, weights_path)
            model = adapted.merge_and_unload() if merge else adapted.get_base_model()
    except pickle.UnpicklingError as error:
        raise InputError(weights_error_message(error), path=weights_path) from None
    except torch.OutOfMemoryError:  # a RuntimeError too, but the machine's limit, not a mismatch
        raise RunError(f"out of memory merging the adapter into {adapter_base}: use a device with more memory or a "
                       f"smaller dtype", path=weights_path) from None
    except (RuntimeError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"the adapter does not fit the base model {adapter_base} ({first_line})",
                         path=weights_path) from None
    return model.to(device).eval()
