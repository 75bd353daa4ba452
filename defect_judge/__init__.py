"""The defect-judge toolkit's package: one module per contract, grouped by the pipeline's stages.

``data/`` (file schemas, labels, the split) -> ``model/`` (loading, inference, the verdict head) -> ``train/``
(samples, loss, Trainer, run folder) -> ``evaluate/`` (judges, metrics, results) -> ``report/`` (charts); the
pieces every stage uses (templates, settings, errors, atomic files, ranks, statistics) sit at the top. The scripts
in ``dataset/``, ``instruct_fine_tuning/``, ``eval/`` and ``tools/`` import them, so each is defined once
(docs/design.md has the map). This module holds the repository root and two helpers for scripts and tests.
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
