"""Load: evaluation over 5,000 samples (the shipped test samples repeated under new ids) in score
mode with a tiny model. The results are complete, the progress bar counts to 5,000, and memory stays
flat while samples stream through (RSS sampled from a thread inside the evaluating process).

Slow (about a minute or two on 2 cores): run with `make test-slow`."""
from __future__ import annotations

import json
import re

import pytest

from helpers import EVALUATE, run_script


SAMPLES = 5000
# Allowed RSS growth between 1,000 and 4,900 finished samples. A leak of one logits row per sample
# (49,152 float32) would be ~750 MiB here; the results themselves never stay in memory during the run.
MAX_GROWTH_MB = 64

# Runs the evaluation as __main__ in this process, with a thread that records (finished samples, RSS).
PROBE = r'''
import json, runpy, sys, threading, time
from pathlib import Path

log_path, partial, script = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def finished():
    try:
        return max(0, partial.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0

def sample():
    with open(log_path, "w") as log:
        while True:
            log.write(json.dumps([finished(), rss_kb()]) + "\n")
            log.flush()
            time.sleep(0.1)

threading.Thread(target=sample, daemon=True).start()
sys.argv = [script] + sys.argv[4:]
runpy.run_path(script, run_name="__main__")
'''


@pytest.mark.slow
def test_5000_samples_in_score_mode_complete_with_flat_memory(tiny_model_dir, shipped_split, tmp_path):
    base = [json.loads(line) for line in shipped_split["test_file"].read_text(encoding="utf-8").splitlines()]
    rows = [dict(base[i % len(base)], id=f"{base[i % len(base)]['id']}@{i // len(base)}") for i in range(SAMPLES)]
    test_file = tmp_path / "test_5000.jsonl"
    test_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out, log = tmp_path / "out", tmp_path / "rss.jsonl"
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    result = run_script(probe, log, out / "evaluation_results.partial.jsonl", EVALUATE, "--model_path",
                        tiny_model_dir, "--test_dataset_path", test_file, "--output_dir", out, "--mode", "score",
                        env={"OMP_NUM_THREADS": "1"}, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]

    results = json.loads((out / "evaluation_results.json").read_text(encoding="utf-8"))
    assert [s["id"] for s in results["samples"]] == [r["id"] for r in rows]  # each id once, in order
    assert results["overall"]["total"] == SAMPLES
    assert all(s["prediction"] in ("是", "否") for s in results["samples"])
    # The bar's total is the sample count, and it reached it.
    totals = {int(m.group(2)) for m in re.finditer(r"score:.*?(\d+)/(\d+)", result.stderr)}
    assert totals == {SAMPLES}, totals
    assert f"{SAMPLES}/{SAMPLES}" in result.stderr

    samples = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    early = [kb for done, kb in samples if 1000 <= done < 1300]
    late = [kb for done, kb in samples if 4700 <= done < SAMPLES]
    assert early and late, "the probe saw too few points"
    growth_mb = (max(late) - max(early)) / 1024
    print(f"RSS at ~1,000 samples {max(early) / 1024:.0f} MiB, at ~4,900 {max(late) / 1024:.0f} MiB, "
          f"growth {growth_mb:.1f} MiB")
    assert growth_mb < MAX_GROWTH_MB
