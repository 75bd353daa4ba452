#!/usr/bin/env bash
# make judge: the judge make demo trained, pointed at real C code no one here wrote.
#   1 fetch pycrypto 2.6.1's source distribution from the package index (pip download)
#   2 run cppcheck on it (SARIF 2.1.0)
#   3 triage cppcheck's findings with the judge          -> RUN_DIR/triage/  (judged.sarif, verdicts.jsonl)
#   4 judge every function of one of its files for every subtype -> RUN_DIR/functions/
# Knobs (environment): JUDGE_MODEL (default runs/demo/latest/train, make demo's), JUDGE_FILE (the file of step 4,
# default src/_counter.c), JUDGE_SDIST (a pycrypto-2.6.1.tar.gz already here: no download), RUN_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
CPPCHECK="$PWD/.venv/bin/cppcheck"
MODEL="${JUDGE_MODEL:-runs/demo/latest/train}"
FILE="${JUDGE_FILE:-src/_counter.c}"
PACKAGE="pycrypto==2.6.1"
RUN_DIR="${RUN_DIR:-runs/judge/$(date +%Y%m%d-%H%M%S)}"
stage() { printf '\n==== [%s] %s ====\n' "$(date +%H:%M:%S)" "$*"; }

if [[ ! -e "$MODEL/best_checkpoint.json" && ! -e "$MODEL/verdict_head.json" && ! -e "$MODEL/config.json" ]]; then
    echo "run_judge.sh: error: $MODEL: no trained judge there; run make demo first (or set JUDGE_MODEL)" >&2
    exit 2
fi
mkdir -p "$RUN_DIR"
ln -sfn "$(basename "$RUN_DIR")" "$(dirname "$RUN_DIR")/latest" 2>/dev/null || true
export TOKENIZERS_PARALLELISM=false

stage "1/4 fetch $PACKAGE's source distribution from the package index"
SDIST="${JUDGE_SDIST:-}"
if [[ -z "$SDIST" ]]; then
    if ! $PY -m pip download -q --no-deps --no-binary :all: "$PACKAGE" -d "$RUN_DIR/sdist" 2>"$RUN_DIR/pip.log"; then
        echo "run_judge.sh: failed: cannot fetch $PACKAGE from the package index (see $RUN_DIR/pip.log); run it" \
             "where pip can download, or set JUDGE_SDIST=path/to/pycrypto-2.6.1.tar.gz" >&2
        exit 1
    fi
    SDIST="$(ls "$RUN_DIR"/sdist/pycrypto-2.6.1.tar.gz)"
fi
tar -xzf "$SDIST" -C "$RUN_DIR"
ROOT="$RUN_DIR/pycrypto-2.6.1"
echo "$(find "$ROOT/src" -name '*.c' | wc -l) C files, $(find "$ROOT/src" -name '*.c' -exec cat {} + | wc -l) lines in $ROOT/src"

stage "2/4 cppcheck $ROOT/src -> $RUN_DIR/cppcheck.sarif"
# Its paths are relative to the folder it runs in: the source root of step 3.
(cd "$ROOT" && "$CPPCHECK" --output-format=sarif --output-file=../cppcheck.sarif -q --enable=warning \
    --inconclusive --library=posix -DHAVE_STDINT_H -DHAVE_LIBGMP -Isrc -Isrc/libtom src)

stage "3/4 triage cppcheck's findings with $MODEL (the head's verdict and P, the model's reason)"
$PY judge/judge_code.py --model_path "$MODEL" --sarif "$RUN_DIR/cppcheck.sarif" --source_root "$ROOT" \
    --mode generate --max_new_tokens 96 --output_dir "$RUN_DIR/triage"

stage "4/4 judge every function of $FILE for every subtype (score mode)"
$PY judge/judge_code.py --model_path "$MODEL" --source "$ROOT/$FILE" --source_root "$ROOT" --subtypes all \
    --output_dir "$RUN_DIR/functions"

printf '\nmake judge: %s (triage/judged.sarif opens in any SARIF viewer; triage/judged.upload.sarif is for GitHub)\n' \
    "$RUN_DIR"
