"""Shared contracts of the defect-judge toolkit.

Every script in ``dataset/``, ``instruct_fine_tuning/`` and ``eval/`` imports the
prompt/answer templates, the answer parser and the JSONL record schema from
here, so each is defined exactly once.
"""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """A script of this repo (e.g. ``eval/bench_eval.py``) imported as a module, once, to reuse its pieces."""
    import importlib.util

    path = REPO_ROOT / relative
    if path.stem in sys.modules:
        return sys.modules[path.stem]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # registered before it runs: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A free TCP port on the loopback, for a launcher's rendezvous (another run may hold its default 29500)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
