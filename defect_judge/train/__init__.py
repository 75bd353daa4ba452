"""The training stage: samples to token ids, the loss and the Trainer, the trainable layers (LoRA), the verdict head's
part of a run and the linear probe, tracking, the CPU heap, named recipes, and the training run folder."""
