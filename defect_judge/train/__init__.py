"""The training stage: samples to token ids, the loss and the Trainer, the linear probe, named recipes, and the training run folder."""
