"""defect_judge/train/callbacks.py: the callbacks a training run adds, called as the Trainer calls them, with real
TrainingArguments and TrainerState (their runs under DeepSpeed: test_train_lora.py, test_run_training_lora.py)."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from defect_judge.model.run_folder import checkpoint_name, find_resume_checkpoint, is_complete_checkpoint
from defect_judge.train.callbacks import MarkCheckpointCompleteCallback, LogPeakGpuMemoryCallback, ReleaseSharedMemoryCallback


def arguments(tmp_path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")


def test_a_saved_checkpoint_is_marked_complete_and_becomes_the_one_to_resume(tmp_path):
    args, state = arguments(tmp_path), TrainerState(global_step=4)
    (tmp_path / checkpoint_name(2)).mkdir()  # a checkpoint cut off mid-save: never marked
    folder = tmp_path / checkpoint_name(4)
    folder.mkdir()
    MarkCheckpointCompleteCallback().on_save(args, state, TrainerControl())
    assert is_complete_checkpoint(folder) and not is_complete_checkpoint(tmp_path / checkpoint_name(2))
    assert find_resume_checkpoint(tmp_path)[0] == folder


def test_no_checkpoint_folder_no_marker(tmp_path):
    """save_strategy "no" with a save at the end: the callback runs, but there is no checkpoint to mark."""
    MarkCheckpointCompleteCallback().on_save(arguments(tmp_path), TrainerState(global_step=3), TrainerControl())
    assert not (tmp_path / checkpoint_name(3)).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU case: no GPU counter to read")
def test_without_a_gpu_the_final_log_entry_is_left_as_it_is(tmp_path):
    state = TrainerState()
    state.log_history = [{"loss": 1.0, "step": 1}, {"train_runtime": 2.0, "step": 1}]
    LogPeakGpuMemoryCallback().on_train_end(arguments(tmp_path), state, TrainerControl())
    assert state.log_history == [{"loss": 1.0, "step": 1}, {"train_runtime": 2.0, "step": 1}]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_peak_gpu_memory_joins_the_final_log_entry_only(tmp_path):
    torch.ones(1024, device="cuda")
    state = TrainerState()
    state.log_history = [{"loss": 1.0, "step": 1}, {"train_runtime": 2.0, "step": 1}]
    LogPeakGpuMemoryCallback().on_train_end(arguments(tmp_path), state, TrainerControl())
    assert state.log_history[-1]["train_peak_gpu_memory_bytes"] >= 4096 and "train_peak_gpu_memory_bytes" not in \
        state.log_history[0]


def test_shared_memory_is_released_at_the_first_epoch_only(tmp_path, caplog):
    """Outside DeepSpeed there is nothing to release and nothing is said; the callback is done after one epoch."""
    callback = ReleaseSharedMemoryCallback()
    assert not callback.released
    with caplog.at_level("INFO"):
        for _ in range(2):
            callback.on_epoch_begin(arguments(tmp_path), TrainerState(), TrainerControl())
            assert callback.released
    assert "shared-memory" not in caplog.text
