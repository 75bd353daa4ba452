"""defect_judge/model/loading.py on real folders: what a model folder must hold (safetensors unless pickle is
allowed), tokenizers (a chat template required, a pad token given), the model loaded as it was saved or refused in
one line (corrupt weights, code shipped in the folder, a pickle that is more than tensors), a tokenizer that does not
fit the model, and ``inference_model``: a model folder, or a LoRA adapter saved by peft merged into its base or kept
beside it (switched off, the base model computes), or refused when it does not fit the base."""
from __future__ import annotations

import copy
import json
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from defect_judge.model.loading import (check_model_folder, check_tokenizer_matches, has_safetensors_weights,
                                        inference_model, load_causal_lm, load_tokenizer, pick_dtype,
                                        quiet_library_deprecations, weights_error_message)
from defect_judge.model.verdict_head import adapter_disabled
from helpers import assert_input_error, build_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread

PROMPT = "int f(int *p) { return *p; }"


def logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        return model(ids).logits[0].float()


def lora_layers(model) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in model.modules())


# ------------------------------------------------------------------ folders

def test_dtype_is_fp32_on_the_cpu():
    assert pick_dtype("cpu") == torch.float32
    if not torch.cuda.is_available():
        assert pick_dtype() == torch.float32


def test_safetensors_weights_single_or_sharded(tmp_path):
    assert not has_safetensors_weights(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert not has_safetensors_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    assert has_safetensors_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").unlink()
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert has_safetensors_weights(tmp_path)


def test_what_a_model_folder_must_hold(tmp_path):
    folder = tmp_path / "model"
    assert_input_error(lambda: check_model_folder(folder), str(folder), "model path does not exist")
    folder.write_text("a file")
    assert_input_error(lambda: check_model_folder(folder), str(folder), "model path is not a folder")
    folder.unlink()
    folder.mkdir()
    assert_input_error(lambda: check_model_folder(str(folder)), str(folder), "no config.json")
    (folder / "config.json").write_text("{}")
    assert_input_error(lambda: check_model_folder(folder), str(folder), "no model weights (*.safetensors)")
    for name in ("pytorch_model-00002.bin", "pytorch_model-00001.bin", "training_args.pt"):
        (folder / name).write_bytes(b"")
    assert_input_error(lambda: check_model_folder(folder), str(folder),
                       "only pickle weights (pytorch_model-00001.bin, pytorch_model-00002.bin, training_args.pt)",
                       "pickle can run code", "--allow_pickle")
    assert check_model_folder(folder, allow_pickle=True) == folder
    (folder / "model.safetensors").write_bytes(b"")
    assert check_model_folder(str(folder)) == folder  # safetensors beside a pickle: the safetensors are read


# ------------------------------------------------------------------ tokenizers

def test_a_tokenizer_is_loaded_with_a_pad_token_and_a_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path / "no-pad")
    assert AutoTokenizer.from_pretrained(tmp_path / "no-pad").pad_token is None
    assert load_tokenizer(tmp_path / "no-pad").pad_token == tokenizer.eos_token
    no_template = copy.deepcopy(tokenizer)
    no_template.chat_template = None
    no_template.save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "chat_template.jinja").unlink(missing_ok=True)
    assert_input_error(lambda: load_tokenizer(tmp_path / "base"), f"the tokenizer of {tmp_path / 'base'}",
                       "has no chat template")
    assert load_tokenizer(tmp_path / "base", require_template=False).chat_template is None


def test_a_folder_without_a_tokenizer_is_one_line_naming_it(tmp_path):
    assert_input_error(lambda: load_tokenizer(tmp_path / "missing"), str(tmp_path / "missing"),
                       "tokenizer path does not exist")
    (tmp_path / "empty").mkdir()
    assert_input_error(lambda: load_tokenizer(tmp_path / "empty"), str(tmp_path / "empty"),
                       "cannot load a tokenizer")


def test_a_tokenizer_that_does_not_fit_the_embedding_table_is_refused(tiny_model, embedded_tokenizer):
    check_tokenizer_matches(tiny_model, embedded_tokenizer, "/m", "/t")
    smaller = copy.deepcopy(tiny_model)
    smaller.resize_token_embeddings(1000)
    assert_input_error(lambda: check_tokenizer_matches(smaller, embedded_tokenizer, "/m", "/t"),
                       f"the tokenizer at /t ({len(embedded_tokenizer)} tokens) does not match the model at /m "
                       f"(1000 embedding rows)", "use the model's own tokenizer")


# ------------------------------------------------------------------ models

def test_a_model_loads_as_it_was_saved(tiny_model_dir, tiny_model, embedded_tokenizer):
    model = load_causal_lm(tiny_model_dir)
    assert next(model.parameters()).dtype == torch.float32  # pick_dtype on the CPU
    torch.testing.assert_close(logits(model, embedded_tokenizer), logits(tiny_model, embedded_tokenizer))
    assert next(load_causal_lm(tiny_model_dir, dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16


def test_truncated_weights_are_one_line_naming_the_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    assert_input_error(lambda: load_causal_lm(folder), str(folder), "cannot load the model weights (",
                       "is a file truncated or corrupt?")


def test_code_shipped_in_a_model_folder_is_refused_without_running_it(tiny_model_dir, tmp_path):
    folder, marker = tmp_path / "shipped-code", tmp_path / "CODE_RAN"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modeling_shipped.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n", encoding="utf-8")
    shipped = {"AutoConfig": "modeling_shipped.ShippedConfig", "AutoModelForCausalLM": "modeling_shipped.ShippedLM"}
    config_file = folder / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"model_type": "shipped",
                                                                             "auto_map": shipped}))
    assert_input_error(lambda: load_causal_lm(folder), str(folder),
                       "needs code shipped in its folder (modeling_shipped.ShippedConfig, modeling_shipped.ShippedLM)",
                       "--trust_remote_code only if you trust this folder")
    assert not marker.exists()


def hostile_pickle(marker: Path) -> bytes:
    """A pickle that writes ``marker`` when it is loaded: what a malicious pytorch_model.bin can do."""
    class Payload:
        def __reduce__(self):
            return Path.write_text, (marker, "unpickled")

    return pickle.dumps({"model.embed_tokens.weight": Payload()}, protocol=2)


def test_allowed_pickle_weights_load_tensors_only(tiny_model_dir, tiny_model, embedded_tokenizer, tmp_path):
    """With allow_pickle a .bin model loads, the same as the model it was saved from; a pickle that holds more
    than tensors is still refused by the weights-only unpickler, in one line, and runs nothing."""
    folder = tmp_path / "bin-model"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "config.json", folder)
    torch.save(dict(tiny_model.state_dict()), folder / "pytorch_model.bin")
    assert_input_error(lambda: load_causal_lm(folder), "only pickle weights (pytorch_model.bin)", "--allow_pickle")
    torch.testing.assert_close(logits(load_causal_lm(folder, allow_pickle=True), embedded_tokenizer),
                               logits(tiny_model, embedded_tokenizer))
    marker = tmp_path / "PICKLE_RAN"
    (folder / "pytorch_model.bin").write_bytes(hostile_pickle(marker))
    assert_input_error(lambda: load_causal_lm(folder, allow_pickle=True), str(folder),
                       "weights-only loader refuses", "convert the checkpoint to safetensors")
    assert not marker.exists()


def test_the_words_for_weights_that_did_not_load():
    assert "weights-only loader refuses" in weights_error_message(pickle.UnpicklingError("GLOBAL pathlib.Path"))
    assert weights_error_message(OSError("header too large\nsecond line")) == (
        "cannot load the model weights (OSError: header too large); is a file truncated or corrupt?")
    assert weights_error_message(RuntimeError()) == (
        "cannot load the model weights (RuntimeError: RuntimeError); is a file truncated or corrupt?")


def test_only_the_one_known_deprecation_is_silenced():
    message = "`is_gradient_checkpointing` is deprecated and will be removed"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_library_deprecations():
            warnings.warn(message, FutureWarning)
            warnings.warn("something else is deprecated", FutureWarning)
        warnings.warn(message, FutureWarning)  # outside: as before
    assert [str(w.message) for w in caught] == ["something else is deprecated", message]


# ------------------------------------------------------------------ inference_model

@pytest.fixture(scope="module")
def adapter(tiny_model_dir, embedded_tokenizer, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """A LoRA adapter saved by peft on the tiny model (weights away from zero, so it changes the model), and the
    logits the adapted model gave before it was saved."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("lora-adapter")
    torch.manual_seed(7)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    with quiet_library_deprecations():
        adapted = get_peft_model(base, config)
    adapted.save_pretrained(folder, safe_serialization=True)
    return folder, logits(adapted.eval(), embedded_tokenizer)


def test_a_model_folder_is_loaded_ready_for_inference(tiny_model_dir, tiny_model, embedded_tokenizer):
    model = inference_model(tiny_model_dir, dtype=torch.float32, device="cpu")
    assert not model.training and next(model.parameters()).device == torch.device("cpu")
    torch.testing.assert_close(logits(model, embedded_tokenizer), logits(tiny_model, embedded_tokenizer))


def test_an_adapter_merged_into_its_base_computes_as_the_adapted_model(adapter, tiny_model_dir, tiny_model,
                                                                        embedded_tokenizer):
    folder, expected = adapter
    merged = inference_model(folder, adapter_base=tiny_model_dir, dtype=torch.float32, device="cpu")
    assert type(merged).__name__ == "LlamaForCausalLM" and lora_layers(merged) == 0  # no adapter left to run
    assert not merged.training
    got = logits(merged, embedded_tokenizer)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, logits(tiny_model, embedded_tokenizer), atol=1e-3)  # the adapter counts


def test_an_adapter_kept_beside_its_base_can_be_switched_off(adapter, tiny_model_dir, tiny_model, embedded_tokenizer):
    """merge=False (a verdict head that reads the base model): the same outputs as merged, and the base model's
    with the adapter switched off."""
    folder, expected = adapter
    kept = inference_model(folder, adapter_base=tiny_model_dir, dtype=torch.float32, device="cpu", merge=False)
    assert type(kept).__name__ == "LlamaForCausalLM" and lora_layers(kept) == 3 * 2  # q, v, down in 2 layers
    assert not kept.training
    torch.testing.assert_close(logits(kept, embedded_tokenizer), expected, atol=1e-4, rtol=1e-4)
    with adapter_disabled(kept):
        torch.testing.assert_close(logits(kept, embedded_tokenizer), logits(tiny_model, embedded_tokenizer))
    torch.testing.assert_close(logits(kept, embedded_tokenizer), expected, atol=1e-4, rtol=1e-4)


def test_an_adapter_that_does_not_fit_its_base_is_one_line_naming_both(adapter, embedded_tokenizer, tmp_path):
    folder, _ = adapter
    other = build_tiny_model(tmp_path / "hidden-32", embedded_tokenizer, hidden=32)
    assert_input_error(lambda: inference_model(folder, adapter_base=other, dtype=torch.float32, device="cpu"),
                       str(folder), f"the adapter does not fit the base model {other} (")


def test_an_adapter_pickle_that_is_more_than_tensors_runs_nothing(adapter, tiny_model_dir, tmp_path):
    folder, _ = adapter
    hostile, marker = tmp_path / "pickle-adapter", tmp_path / "PICKLE_RAN"
    hostile.mkdir()
    shutil.copy(folder / "adapter_config.json", hostile)
    (hostile / "adapter_model.bin").write_bytes(hostile_pickle(marker))
    assert_input_error(lambda: inference_model(hostile, adapter_base=tiny_model_dir, dtype=torch.float32,
                                               device="cpu"),
                       str(hostile), "weights-only loader refuses")
    assert not marker.exists()


def test_the_base_of_an_adapter_is_checked_like_any_model_folder(adapter, tmp_path):
    folder, _ = adapter
    assert_input_error(lambda: inference_model(folder, adapter_base=tmp_path / "no-base", dtype=torch.float32,
                                               device="cpu"), str(tmp_path / "no-base"), "model path does not exist")
