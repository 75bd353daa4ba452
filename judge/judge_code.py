#!/usr/bin/env python
"""缺陷研判 — judge new code with a trained judge: a static analyzer's warnings, source files, or samples.

One input of three:

  --sarif FILE --source_root DIR   triage: every result of the SARIF 2.1.0 log (cppcheck, the clang static
                                   analyzer, CodeQL, ...) is asked about the function enclosing its defect site
                                   (its last location) and its subtype (the rule's CWE tag, else the rule table
                                   of defect_judge/judge/rules.py, --rule_map to add or override entries)
  --source PATH... --subtypes NAME...|all
                                   every function of the files (C, C++, Java by extension; folders walked),
                                   asked about each subtype (by name, 空指针解引用, or key, null_pointer_dereference)
  --input FILE                     samples without a judgement: raw samples (.json/.jsonl) or chat records
                                   (.jsonl), the data format's rules (docs/data_format.md)

Each question is asked in the training format (the subtype's task phrase, the function as the event, the
output format in the model's own judgement words), and judged as eval/model_evaluation.py judges a test
sample, by the same code: the same model and head give the same verdict and P(defective). OUTPUT_DIR
(default ./judge/output) gets:

  verdicts.jsonl       one row a question: id, file, function, start/end line, subtype, verdict, defective,
                       p_defective (score mode or a head; null otherwise), reason (generate mode), the
                       verdict's source, whether the code was cut to fit, the prompt's sha256
  summary.md           the counts (also printed), per subtype, and the findings not judged and why
  judged.sarif         --sarif: the input log, unchanged but for the toolkit's marks on each result
                       (properties.defectJudge: verdict, p_defective, subtype, reason, model, head; rank =
                       round(100 P); a suppression, kind external, status underReview, when judged clean; a
                       result not judged keeps its place with the reason); --source: one result per defective
                       verdict (the subtype as its rule, with its CWE)
  judged.upload.sarif  --sarif: the same without the results judged clean (GitHub code scanning ignores
                       suppressions)

The model: --model_path is a training OUTPUT_DIR (its best checkpoint), a checkpoint, a merged model or a base
model, as for the evaluation. What it answers (its judgement words), the subtypes it was trained on, the
training's max_length and the dev threshold come recorded with a trained model (best_checkpoint.json,
verdict_head.json); a base model needs --judgements. Its verdict head, when it carries one, decides: in score
mode (the default) one forward pass per prompt that stops at the head's highest layer; in generate mode the
model then writes its reason after the head's verdict. --mode generate without a head: the model's own answer.

Distinct prompts are judged once, longest first in batches; data-parallel under torchrun (each rank a share);
resumable: run the same command again after a crash and it goes on (--overwrite starts over).

Examples:
  python judge/judge_code.py --model_path runs/demo/latest/train --sarif cppcheck.sarif --source_root src/
  python judge/judge_code.py --model_path runs/demo/latest/train --source src/parser.c --subtypes all
  python judge/judge_code.py --model_path runs/demo/latest/train --source src/ --subtypes 空指针解引用 memory_leak \\
      --mode generate --output_dir judge/output/src
  python judge/judge_code.py --model_path models/SmolLM2-135M-Instruct --judgements 是 否 --input new.jsonl
  cppcheck --output-format=sarif --output-file=cppcheck.sarif -q --enable=warning --inconclusive \\
      --library=posix src/     (then --sarif cppcheck.sarif --source_root .)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared defect_judge package

from defect_judge.cli import Settings, parse_settings
from defect_judge.data.subtypes import find_subtypes
from defect_judge.distributed import init_ranks, setup_rank_logging
from defect_judge.errors import InputError, run_main
from defect_judge.evaluate.head_choice import choose_head
from defect_judge.evaluate.session import JudgeSession, resolve_model
from defect_judge.evaluate.verdicts import source_for
from defect_judge.fileio import check_output_dir
from defect_judge.judge import stage
from defect_judge.judge.outputs import VERDICTS_FILE, JudgeInfo
from defect_judge.judge.rules import load_rule_map
from defect_judge.model.judge_card import describe, judge_card

# ----------------------------------------------------------------------------
# 参数配置 (edit here, or override any of them with --name value, e.g. --model_path)

# 模型路径: a training OUTPUT_DIR (its best checkpoint), a checkpoint, a merged model or a base model
MODEL_PATH = "./runs/demo/latest/train"
# triage: a SARIF 2.1.0 log of a static analyzer (e.g. cppcheck --output-format=sarif)
SARIF = ""
# the folder the SARIF log's file paths are relative to; a file that resolves outside it is never opened
# (empty: the current folder)
SOURCE_ROOT = ""
SOURCE = []  # source files or folders (C, C++, Java) whose every function is judged
SUBTYPES = ["all"]  # the subtypes each function of --source is judged for: names, keys, or all
INPUT = ""  # samples without a judgement: raw samples (.json/.jsonl) or chat records (.jsonl)
OUTPUT_DIR = "./judge/output"  # folder for verdicts.jsonl, summary.md and judged.sarif
# rule id -> subtype entries that add to or override the shipped rule table ({"myRule": "内存泄漏", ...})
RULE_MAP = ""
# the judgement words a base model answers, defective first (a trained model records its own)
JUDGEMENTS = []
# base model of a LoRA adapter, when the one its adapter_config.json names is not here (overrides it)
BASE_MODEL_PATH = ""
tokenizer_path = ""  # empty: the tokenizer that comes with the model
MODE = "score"  # score (P(defective), no generation) or generate (the model writes its reason)
# the verdict head: empty: the one that comes with the model, if any; a folder holding verdict_head.json; none
VERDICT_HEAD = ""
# model: the dev threshold recorded with the model (training chose it for its head), if any; none: argmax; or
# the dev split's evaluation_results.json of this model (or its folder), or a dev .jsonl scored first
THRESHOLD_FROM = "model"
MAX_NEW_TOKENS = 256  # longest answer generated (generate mode)
# longest prompt and verdict in tokens: longer code is cut at its end, as training cuts it (0: the training's
# max_length recorded with the model, else the model's context)
MAX_LENGTH = 0
BATCH_SIZE = 32  # prompts judged together, longest first
# score mode with a verdict head: also score what the model alone answers (one more pass through every layer)
MODEL_ANSWER = False
# a suppression for a clean verdict says status accepted (the default, underReview, leaves it to a reviewer)
ACCEPT_CLEAN = False
OVERWRITE = False  # replace the outputs of an earlier run in OUTPUT_DIR, or drop its partial results
TRUST_REMOTE_CODE = False  # run code shipped with the model folder (only for models you trust)
ALLOW_PICKLE = False  # load pickle (.bin) weights through torch's weights-only unpickler (folders you trust)
# ----------------------------------------------------------------------------
PATHS = ("model_path", "sarif", "input", "output_dir", "rule_map", "base_model_path", "tokenizer_path",
         "verdict_head")  # THRESHOLD_FROM is a word (model) or a path given on the command line
MODES = ("generate", "score")

log = logging.getLogger("judge_code")


def parse_args() -> tuple[Settings, bool]:
    args, given = parse_settings(globals(), paths=PATHS)
    inputs = [name for name in ("sarif", "source", "input") if getattr(args, name)]
    if len(inputs) != 1:
        raise InputError("give one input: --sarif FILE (with --source_root), --source PATH... or --input FILE"
                         + (f" (got {', '.join('--' + name for name in inputs)})" if inputs else ""))
    if args.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}")
    for name in ("batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.max_length < 0:
        raise InputError(f"--max_length must be 0 (the training's, else the model's context) or a number of tokens, "
                         f"got {args.max_length}")
    output_dir = check_output_dir(args.output_dir)
    if (output_dir / VERDICTS_FILE).exists() and not args.overwrite:
        raise InputError("holds the verdicts of an earlier run: pass --overwrite to replace them, or choose another "
                         "--output_dir", path=output_dir / VERDICTS_FILE, field="output_dir")
    return args, "tokenizer_path" in given


def read_questions(args: Settings, card) -> stage.Questions:
    if args.sarif:
        rule_map = load_rule_map(args.rule_map) if args.rule_map else None
        return stage.sarif_input(args.sarif, args.source_root, rule_map, card)
    if args.source:
        return stage.source_input(args.source, find_subtypes(args.subtypes), args.source_root, card)
    return stage.samples_input(args.input)


def main() -> None:
    args, tokenizer_explicit = parse_args()
    setup_rank_logging()
    resolved, tokenizer_dir = resolve_model(args.model_path, base_model_path=args.base_model_path,
                                            tokenizer_path=args.tokenizer_path, tokenizer_explicit=tokenizer_explicit,
                                            allow_pickle=args.allow_pickle)
    card = judge_card(resolved.weights_path, run_folder=resolved.run_folder, head_config=resolved.head_config,
                      judgements=args.judgements)
    if card.positive is None:
        raise InputError(f"the judge tells defective from clean code: it needs two judgements, the model answers "
                         f"{'/'.join(card.judgements)}", field="judgements")
    log.info("judge card: %s", describe(card))
    head = choose_head(args.verdict_head, resolved, list(card.judgements), trust_remote_code=args.trust_remote_code)
    questions = read_questions(args, card)  # every input error shows before a model loads
    stage.warn_untrained_subtypes(questions, card)
    ranks = init_ranks()
    session = JudgeSession(resolved, tokenizer_dir, ranks, head, trust_remote_code=args.trust_remote_code,
                           allow_pickle=args.allow_pickle)
    budget, _ = session.prompt_budget(max_length=args.max_length, mode=args.mode, max_new_tokens=args.max_new_tokens,
                                      vocabulary=card.judgements)
    threshold, threshold_from = stage.judge_threshold(args.threshold_from, args.mode, session, card, ranks, budget)
    rows, seconds, prompts = stage.judge_questions(
        questions, session, card, output_dir=args.output_dir, mode=args.mode, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, max_length=args.max_length, model_answer=args.model_answer,
        threshold=threshold, overwrite=args.overwrite)
    if rows is not None:
        info = JudgeInfo(str(args.model_path), resolved.model_kind, head.head.spec if head.head else None, args.mode,
                         source_for(args.mode, head=head.head is not None), 0.5 if threshold is None else threshold,
                         threshold_from, card.positive, card.negative)
        print(stage.write_outputs(args.output_dir, questions, rows, info, accept_clean=args.accept_clean,
                                  seconds=seconds, prompts=prompts))
    ranks.finish()


if __name__ == "__main__":
    run_main(main)
