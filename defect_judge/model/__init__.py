"""Models: loading them safely, which model a path names, the chat template, batched inference, and the verdict head over hidden states."""
