"""Assembling a judge: the model a path names and its tokenizer, its verdict head, the dtype and device of this
rank, loaded once; how long a prompt it may be asked; and judging this rank's share of prompts into a resumable
partial file.

``eval/model_evaluation.py`` (labelled test records) and ``judge/judge_code.py`` (new code, no reference) both
assemble their judge here, so one model gives one prompt the same verdict in both.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from defect_judge.distributed import Ranks
from defect_judge.errors import InputError
from defect_judge.evaluate import judges
from defect_judge.evaluate.head_choice import HeadChoice
from defect_judge.evaluate.partial import PartialWriter, load_finished, remove_partials
from defect_judge.evaluate.results_folder import PARTIAL_STEM
from defect_judge.fileio import read_json_object
from defect_judge.model import inference
from defect_judge.model import paths as model_paths
from defect_judge.model.judge_card import recorded_card
from defect_judge.model.loading import check_tokenizer_matches, inference_model, load_tokenizer, pick_dtype

log = logging.getLogger(__name__)


def resolve_model(model_path: str, *, base_model_path: str = "", tokenizer_path: str = "",
                  tokenizer_explicit: bool = False, allow_pickle: bool = False
                  ) -> tuple[model_paths.ResolvedModel, Path]:
    """What ``model_path`` is (logged, with its notes) and the tokenizer folder to use."""
    resolved = model_paths.resolve_model(model_path, base_model_path=base_model_path, tokenizer_path=tokenizer_path,
                                         allow_pickle=allow_pickle)
    log.info("model %s: %s", model_path, resolved.describe())
    for note in resolved.notes:
        log.warning(note)
    tokenizer_dir = model_paths.resolve_tokenizer_path(resolved, tokenizer_path, explicit=tokenizer_explicit)
    log.info("tokenizer %s", tokenizer_dir)
    return resolved, tokenizer_dir


def model_context(resolved: model_paths.ResolvedModel) -> int | None:
    """The model's context length (``max_position_embeddings``) as its config.json writes it (read as data: no
    model code runs before the model is loaded, and refused there); None when it names none."""
    config = read_json_object(Path(resolved.base_model_path or resolved.weights_path) / "config.json")
    config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    length = config.get("max_position_embeddings")
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None


def prompt_budget(*, max_length: int, trained_max_length: int | None, context: int | None, verdict_tokens: int,
                  answer_tokens: int) -> tuple[int | None, str]:
    """The most tokens a prompt may have, and why: ``max_length`` (the flag; 0: not given), else the training's
    (``trained_max_length``, recorded with the model), else the context, less the verdict's tokens (training fits
    prompt and answer in max_length); and prompt plus ``answer_tokens`` (what the model may generate) within the
    context. None: no limit is known."""
    limits = []
    length = max_length or trained_max_length or context
    if length:
        source = ("--max_length" if max_length else "the training's max_length" if trained_max_length
                  else "the model's context")
        limits.append((length - verdict_tokens, f"{source} {length} less {verdict_tokens} tokens of verdict"))
    if context:
        limits.append((context - answer_tokens, f"the model's context {context} less {answer_tokens} answer tokens"))
    if not limits:
        return None, "no limit known"
    budget, why = min(limits)
    if budget < 1:
        raise InputError(f"no room left for a prompt: {why}", field="max_length")
    return budget, why


def report_cuts(prompts: Sequence[judges.Prompt], budget: int | None, why: str, noun: str = "sample") -> None:
    """One warning with how many prompts had their event cut to fit, and which."""
    cut = [prompt for prompt in prompts if prompt.cut_chars]
    if cut:
        ids = ", ".join(prompt.record.id for prompt in cut[:5]) + (", ..." if len(cut) > 5 else "")
        log.warning("%d %s(s) longer than the model takes (%d tokens: %s) had the end of their code cut to fit, as "
                    "training cuts them (recorded per %s): %s", len(cut), noun, budget, why, noun, ids)


class JudgeSession:
    """The resolved model, its tokenizer, its verdict head and (once needed) the loaded model: loaded once, whether
    one set of prompts is judged or a dev split first (a threshold) and then the test split."""

    def __init__(self, resolved: model_paths.ResolvedModel, tokenizer_dir: Path, ranks: Ranks, head: HeadChoice, *,
                 trust_remote_code: bool = False, allow_pickle: bool = False):
        self.resolved, self.tokenizer_dir, self.ranks, self.head = resolved, tokenizer_dir, ranks, head
        self.trust_remote_code, self.allow_pickle = trust_remote_code, allow_pickle
        self.dtype = pick_dtype(ranks.device)
        self._tokenizer = self._model = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_dir, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            started = time.perf_counter()
            self._model = inference_model(self.resolved.weights_path, adapter_base=self.resolved.adapter_base,
                                          dtype=self.dtype, device=self.ranks.device, merge=not self.head.reads_base,
                                          trust_remote_code=self.trust_remote_code, allow_pickle=self.allow_pickle)
            check_tokenizer_matches(self._model, self.tokenizer, self.resolved.weights_path, self.tokenizer_dir)
            log.info("loaded in %.1f s on %s (%s)", time.perf_counter() - started, self.ranks.device, self.dtype)
        return self._model

    def judge(self, vocabulary: Sequence[str], mode: str, *, threshold: float = 0.5, max_new_tokens: int = 256,
              model_answer: bool = True) -> judges.Judge:
        """The model judging by its mechanism; a head decides at ``threshold``."""
        model = self.model
        return judges.Judge(model, self.tokenizer, list(vocabulary), mode, head=self.head.head, threshold=threshold,
                            max_new_tokens=max_new_tokens, stop_ids=inference.stop_token_ids(self.tokenizer, model),
                            model_answer=model_answer)

    def prompt_budget(self, *, max_length: int, mode: str, max_new_tokens: int, vocabulary: Sequence[str]
                      ) -> tuple[int | None, str]:
        """The most tokens a prompt may have in ``mode`` (``prompt_budget``): the training's max_length comes
        from the judge card recorded with the model."""
        found = recorded_card(self.resolved.weights_path, self.resolved.run_folder, self.resolved.head_config)
        verdict = judges.answer_tokens(self.tokenizer, vocabulary)
        return prompt_budget(max_length=max_length, trained_max_length=found[0].max_length if found else None,
                             context=model_context(self.resolved),
                             verdict_tokens=verdict,
                             answer_tokens=verdict + max_new_tokens if mode == "generate" else verdict)

    def fingerprint(self, model_path: str | None = None) -> dict:
        """What decides this model's verdicts (partial results are reused only under the same); ``model_path``:
        also the path it was named by."""
        named = {"model_path": str(Path(model_path).resolve())} if model_path is not None else {}
        fingerprint = named | {"model_kind": self.resolved.model_kind,
                       "weights": model_paths.weights_fingerprint(self.resolved),
                       "tokenizer_path": str(self.tokenizer_dir.resolve()),
                       "dtype": str(self.dtype).removeprefix("torch.")}
        if self.head.head is not None:
            fingerprint["verdict_head"] = self.head.to_json()["weights_sha256"]
        return fingerprint


def finished_rows(output_dir: str | Path, fingerprint: dict, ranks: Ranks, *, overwrite: bool,
                  stem: str = PARTIAL_STEM, what: str = "samples already evaluated") -> dict[str, dict]:
    """Rows an earlier, interrupted run with the same settings already finished (none after ``overwrite``, which
    deletes them); ``stem`` names the script's partial files, ``what`` the rows in the log."""
    if overwrite and ranks.rank == 0:
        remove_partials(output_dir, stem)
    ranks.barrier()
    finished = load_finished(output_dir, fingerprint, stem)
    ranks.barrier()  # everyone has read the partial files before anyone appends to them
    if finished:
        log.info("resuming: %d %s in %s", len(finished), what, output_dir)
    return finished


def judge_share(judge: judges.Judge, share: Sequence[judges.Prompt], *, batch_size: int, partial_path: Path,
                fingerprint: dict, rank: int, unit: str = "sample",
                to_rows: Callable[[Sequence[judges.Prompt], list[judges.Verdict]], list[dict]] | None = None) -> None:
    """This rank's prompts judged batch by batch, each finished batch appended to its partial file; ``to_rows``
    makes the rows from a batch and its verdicts (default: the evaluation's result rows)."""
    from tqdm import tqdm

    make_rows = to_rows or judges.result_rows
    started = time.perf_counter()
    with PartialWriter(partial_path, fingerprint) as writer, \
            tqdm(total=len(share), unit=unit, desc=judge.source, disable=rank != 0, dynamic_ncols=True) as bar:
        for start in range(0, len(share), batch_size):
            batch = share[start:start + batch_size]
            writer.append(make_rows(batch, judge.verdicts(batch)))
            bar.update(len(batch))
    if share:
        seconds = time.perf_counter() - started
        log.info("judged %d %ss in %.1f s (%.2f %ss/s)", len(share), unit, seconds, len(share) / seconds, unit)
