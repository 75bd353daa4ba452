"""The data stage: the file schemas of raw samples and chat JSONL records, and the leak-free train/dev/test split."""
