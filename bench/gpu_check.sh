#!/usr/bin/env bash
# One CUDA GPU, under 8 minutes, one summary file: what nlpexp does on a GPU that the CPU test suite cannot see.
#
#   1. MiniLM training samples/s, trainer.precision=bf16 vs fp32 (metrics.json train_samples_per_s; the GPU alone,
#      before everything else; the runner's default batch 8 and batch 64).
#   2. The classifier families (minilm, bert_fc, bert_lstm, transformer, gpt2, gpt2_prompt, bert_chinese_mlm):
#      each trains a smoke run on the GPU, and the saved run is reloaded with `mode=eval ckpt=<run>` on device=cuda
#      and on device=cpu: the metrics must match (TOL), and the training run's own test metrics too; the
#      parameters loaded on both devices must be identical (count and values) and the probabilities within
#      PROB_TOL. The families train in trainer.precision=FAMILY_PRECISION (fp32: a tight comparison).
#   3. The smoke matrix (every registered task x its models, as `make smoke` / nlpexp.smoke runs it) with
#      device=cuda, while 2. runs: every cell must complete, on the GPU.
# Every step runs under `timeout`, cut to what is left of BUDGET seconds (450 by default), so the whole script stays
# under 8 minutes; a step that does not fit fails as "not started (time budget)". Results: OUT_DIR/summary.md (every result,
# pass/fail, overall verdict) and the logs and run folders beside it. Exit status 0 when nothing failed.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # default: $OUT, else ./gpu_check
#
# Environment overrides (a CPU dry run of the plumbing: DEVICE=cpu FAMILIES="minilm" SMOKE_TASKS=posenc ...):
#   DEVICE=cuda  PY=.venv/bin/python (else python3)  BUDGET=450  TOL=1e-4  PROB_TOL=1e-4  FAMILY_PRECISION=fp32
#   FAMILIES="minilm bert_fc bert_lstm transformer gpt2 gpt2_prompt bert_chinese_mlm" (empty: none)  FAMILY_JOBS=4
#   SMOKE_TASKS=all (or a comma list; empty: none)  SMOKE_JOBS=6  SERIAL=0 (1: the sweep before the families, not beside them)
#   PREC_BATCHES="8 64" (empty: none)  PREC_SAMPLES= (all of the train split)  PREC_EPOCHS=1
#   PREC_ARGS= (more overrides for the precision runs, e.g. data.max_eval_samples=32)
#   DATA=../shared/datasets/financial_phrasebank/Sentences_50Agree.txt when present, else (for 1. only) the
#        embedded sample repeated 10x into OUT_DIR, PhraseBank-sized (4,800 texts), so that one epoch outweighs the
#        epoch-end evaluation and checkpoint that train_samples_per_s includes
#   T_PREC=120 T_FAMILY=150 T_SMOKE=300 (seconds, per step)
# Nothing in `make test` runs or needs this script.
set -u

OUT_DIR=${1:-${OUT:-./gpu_check}}  # relative to where it is started
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

DEVICE=${DEVICE:-cuda}
if [[ -z ${PY:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
BUDGET=${BUDGET:-450}
TOL=${TOL:-1e-4}
PROB_TOL=${PROB_TOL:-1e-4}
FAMILY_PRECISION=${FAMILY_PRECISION:-fp32}
FAMILIES=${FAMILIES-minilm bert_fc bert_lstm transformer gpt2 gpt2_prompt bert_chinese_mlm}
FAMILY_JOBS=${FAMILY_JOBS:-4}
SMOKE_TASKS=${SMOKE_TASKS-all}
SMOKE_JOBS=${SMOKE_JOBS:-6}
PREC_BATCHES=${PREC_BATCHES-8 64}
PREC_SAMPLES=${PREC_SAMPLES:-}
PREC_ARGS=${PREC_ARGS:-}
SERIAL=${SERIAL:-0}
T_PREC=${T_PREC:-120}
T_FAMILY=${T_FAMILY:-150}
T_SMOKE=${T_SMOKE:-300}
if [[ -z ${DATA+set} ]]; then  # DATA= (empty) asks for the embedded sample
  DATA=
  for candidate in "$ROOT/../shared" "$ROOT/shared"; do
    if [[ -f $candidate/datasets/financial_phrasebank/Sentences_50Agree.txt ]]; then
      DATA=$candidate/datasets/financial_phrasebank/Sentences_50Agree.txt
      break
    fi
  done
fi
PREC_EPOCHS=${PREC_EPOCHS:-1}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

START=$(date +%s)
RESULTS=$OUT_DIR/results.jsonl
: >"$RESULTS"
mkdir -p "$OUT_DIR/logs"

# seconds a step may take: its own limit, cut to the budget left (10 s kept for the summary)
limit() {
  local want=$1 left
  left=$((START + BUDGET - $(date +%s) - 10))
  ((left < want)) && want=$left
  echo "$want"
}

# record CHECK STATUS(pass|fail|skip|info) DETAIL [key=value ...]: one JSON line in results.jsonl
record() {
  "$PY" -c '
import json, sys
check, status, detail, *pairs = sys.argv[2:]
row = {"check": check, "status": status, "detail": detail}
for pair in pairs:
    key, _, value = pair.partition("=")
    try:
        row[key] = float(value) if "." in value or "e" in value else int(value)
    except ValueError:
        row[key] = value
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
' "$RESULTS" "$@"
  echo "[$(($(date +%s) - START))s] $1: $2 ${3:0:160}"
}

# step LOG SECONDS CMD...: run under timeout; 124 = timed out, 125 = no time left (not started)
step() {
  local log=$1 seconds=$2
  shift 2
  if ((seconds < 5)); then
    echo "not started: the time budget is spent" >"$log"
    return 125
  fi
  timeout -k 10 "$seconds" "$@" >"$log" 2>&1
}

why() {  # a failed step's reason, for the summary
  case $1 in
    124 | 137) echo "timed out" ;;
    125) echo "not started (time budget)" ;;
    *) echo "exit $1: $(grep -v '^\s*$' "$2" | tail -n 1 | cut -c1-200)" ;;
  esac
}

NLPEXP=("$PY" -m nlpexp)  # an array, not a function: `timeout` runs programs

# ---- 0. the machine -------------------------------------------------------------------------------------------
env_log=$OUT_DIR/logs/environment.log
"$PY" - "$DEVICE" >"$env_log" 2>&1 <<'EOF'
import sys
import torch
device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, cuda available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"gpu {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible")
sys.exit(0 if device != "cuda" or torch.cuda.is_available() else 3)
EOF
code_env=$?
if ((code_env != 0)); then
  record environment fail "$(tail -n 2 "$env_log" | tr '\n' ' ') (DEVICE=$DEVICE; a CUDA build of torch: make install TORCH_SPEC=torch, or PY=...)"
else
  record environment info "$(tr '\n' ' ' <"$env_log")" device="$DEVICE" python="$PY"
fi

PRECISION_KEY=yes
if ! "${NLPEXP[@]}" task=finsent model=minilm trainer.precision=bf16 dry_run=true >"$OUT_DIR/logs/precision_key.log" 2>&1; then
  PRECISION_KEY=no
  record precision_key fail "trainer.precision is not in this checkout's config: $(tail -n 1 "$OUT_DIR/logs/precision_key.log" | cut -c1-200)"
fi

# ---- 1. bf16 vs fp32 training samples/s on MiniLM (alone on the GPU) -------------------------------------------------
prec_runs() {
  local batch=$1 p dir code sps=() got s mp md acc
  for p in fp32 bf16; do
    dir=$OUT_DIR/precision/b${batch}_$p
    if [[ $PRECISION_KEY == no ]] || ((code_env != 0)); then
      record "precision b$batch $p" skip "no trainer.precision key or no $DEVICE"
      continue
    fi
    step "$OUT_DIR/logs/precision_b${batch}_$p.log" "$(limit "$T_PREC")" "${NLPEXP[@]}" task=finsent model=minilm \
      device="$DEVICE" trainer.precision="$p" trainer.epochs="$PREC_EPOCHS" trainer.batch_size="$batch" \
      data.path="$PREC_DATA" ${PREC_SAMPLES:+data.max_train_samples="$PREC_SAMPLES"} ${prec_args[@]+"${prec_args[@]}"} \
      hydra.run.dir="$dir"
    code=$?
    if ((code != 0)); then
      record "precision b$batch $p" fail "$(why "$code" "$OUT_DIR/logs/precision_b${batch}_$p.log")"
      continue
    fi
    got=$("$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["train_samples_per_s"], m.get("precision", "fp32"), m["device"], m["metrics"]["test_accuracy"])' "$dir/metrics.json" 2>&1)
    read -r s mp md acc <<<"$got"
    if [[ -z ${acc:-} ]]; then
      record "precision b$batch $p" fail "metrics.json unreadable: ${got:0:200}"
    elif [[ $mp == "$p" && $md == "$DEVICE" ]]; then
      record "precision b$batch $p" pass "$s samples/s, trained in $mp on $md, $PREC_EPOCHS epoch(s) of $(basename "$PREC_DATA"), test accuracy $acc" \
        samples_per_s="$s" test_accuracy="$acc"
      sps+=("$s")
    else
      record "precision b$batch $p" fail "asked $p on $DEVICE, metrics.json says precision=$mp device=$md"
    fi
  done
  if ((${#sps[@]} == 2)); then
    got=$("$PY" -c "print(round(${sps[1]} / ${sps[0]}, 3))")
    record "precision b$batch bf16/fp32" info "bf16 trains at ${got}x the fp32 samples/s (batch $batch)" ratio="$got"
  fi
}
read -r -a prec_args <<<"$PREC_ARGS"  # words: one override each
PREC_DATA=$DATA
if [[ -z $PREC_DATA ]]; then  # PhraseBank-sized: the embedded sample 10 times (duplicates: a speed test only)
  PREC_DATA=$OUT_DIR/precision/finsent_x10.csv
  mkdir -p "$OUT_DIR/precision"
  { head -n 1 nlpexp/resources/finsent.csv
    for _ in 1 2 3 4 5 6 7 8 9 10; do tail -n +2 nlpexp/resources/finsent.csv; done; } >"$PREC_DATA"
fi
for batch in $PREC_BATCHES; do
  prec_runs "$batch"
done

# ---- 3 (in the background). the smoke matrix on the device ----------------------------------------------------------
smoke_log=$OUT_DIR/logs/smoke.log
smoke_rc=$OUT_DIR/logs/smoke.rc
smoke_pid=
if ((code_env == 0)) && [[ -n $SMOKE_TASKS ]]; then
  (
    step "$smoke_log" "$(limit "$T_SMOKE")" "$PY" - "$OUT_DIR/smoke" "$DEVICE" "$SMOKE_TASKS" "$SMOKE_JOBS" \
      "$RESULTS" <<'EOF'
"""nlpexp.smoke's sweep (its own sweep_command, one joblib sweep per task) with device=<DEVICE> added."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nlpexp.config import registry
from nlpexp import smoke
from nlpexp.report.tables import collect_runs

out, device, tasks, jobs, results = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
tasks = list(registry.TASKS) if tasks == "all" else tasks.split(",")
started, expected = time.time(), {}
for task in tasks:
    models = [m for m in registry.TASKS[task].models
              if not registry.MODELS[m].needs_key or os.environ.get(registry.MODELS[m].needs_key)]
    expected.update({(task, m): None for m in models})
    code = subprocess.run(smoke.sweep_command(task, models, out, jobs) + [f"device={device}"]).returncode
    print(f"smoke: {task} x {', '.join(models)}: exit {code}", flush=True)
refused = getattr(smoke, "refused", lambda error: False)  # a one-line refusal of a key: not a failure
rows = []
for run in collect_runs(out):
    task, model = run.get("task"), run.get("model")
    if task is None:  # a failed or killed cell: task and model from its folder (<task>/<n>_<model>)
        task, model = Path(run["run"]).parent.name, Path(run["run"]).name.split("_", 1)[-1]
    ok = run.get("status") == "complete" and run.get("device") == device or refused(run.get("error"))
    status = "refused" if refused(run.get("error")) else run.get("status")
    rows.append((task, model, ok, status, run.get("device"), run.get("error", "")))
    expected[(task, model)] = ok
bad = [r for r in rows if not r[2]]
missing = [k for k, v in expected.items() if v is None]
detail = (f"{sum(r[2] for r in rows)}/{len(expected)} cells complete (or refused in one line) on {device} in "
          f"{time.time() - started:.0f}s ({len(tasks)} tasks)")
if bad:
    detail += "; not: " + "; ".join(f"{t}x{m} {s} on {d} {str(e)[:80]}" for t, m, _, s, d, e in bad)
if missing:
    detail += "; never ran: " + ", ".join(f"{t}x{m}" for t, m in missing)
with open(results, "a") as f:
    f.write(json.dumps({"check": "smoke matrix", "status": "fail" if bad or missing else "pass",
                        "detail": detail, "cells": len(expected)}) + "\n")
for task, model, ok, status, dev, error in rows:
    with open(results, "a") as f:
        f.write(json.dumps({"check": f"smoke {task} x {model}", "status": "pass" if ok else "fail",
                            "detail": f"{status} on {dev} {str(error)[:160]}".strip()}) + "\n")
sys.exit(1 if bad or missing else 0)
EOF
    echo $? >"$smoke_rc"
  ) &
  smoke_pid=$!
  if ((SERIAL)); then  # one thing at a time (a shared CPU machine): the sweep first, then the families
    wait "$smoke_pid"
  fi
else
  record "smoke matrix" skip "no $DEVICE, or SMOKE_TASKS empty"
fi

# ---- 2. the classifier families: train on the device, reload on the device and on the CPU ---------------------------
family() {
  local model=$1 task=finsent dir=$OUT_DIR/families/$1 code
  [[ $model == bert_chinese_mlm ]] && task=chnsenti
  mkdir -p "$dir"
  local prec=()
  [[ $PRECISION_KEY == yes ]] && prec=("trainer.precision=$FAMILY_PRECISION")
  step "$dir/train.log" "$(limit "$T_FAMILY")" "${NLPEXP[@]}" +smoke=true task="$task" model="$model" device="$DEVICE" \
    ${prec[@]+"${prec[@]}"} hydra.run.dir="$dir/train"
  code=$?
  if ((code != 0)); then
    record "family $model" fail "training on $DEVICE: $(why "$code" "$dir/train.log")"
    return
  fi
  local name where
  for name in eval_device eval_cpu; do
    where=cpu
    [[ $name == eval_device ]] && where=$DEVICE
    step "$dir/$name.log" "$(limit 90)" "${NLPEXP[@]}" mode=eval ckpt="$dir/train" device="$where" \
      hydra.run.dir="$dir/$name"
    code=$?
    if ((code != 0)); then
      record "family $model" fail "mode=eval device=$where: $(why "$code" "$dir/$name.log")"
      return
    fi
  done
  step "$dir/compare.log" "$(limit 90)" "$PY" - "$dir" "$DEVICE" "$TOL" "$PROB_TOL" "$model" "$RESULTS" <<'EOF'
"""The saved run's mode=eval on the device vs on the CPU: metrics (and the training run's own test metrics), the
probabilities and predictions of every text; the parameters the run loads with on each device."""
import json
import math
import sys
from pathlib import Path

import pandas as pd

from nlpexp.tasks.classify.recipe import load_run

folder, device, tol, prob_tol, model, results = (Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]),
                                                  float(sys.argv[4]), sys.argv[5], sys.argv[6])


def metrics(run):
    return json.loads((folder / run / "metrics.json").read_text())["metrics"]


def gap(a: dict, b: dict, keys) -> tuple[float, list]:
    worst, off = 0.0, []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(x - y)
            worst = max(worst, d)
            if not d <= tol:
                off.append(f"{k} {x} vs {y}")
    return worst, off


on_device, on_cpu, trained = metrics("eval_device"), metrics("eval_cpu"), metrics("train")
worst, off = gap(on_device, on_cpu, on_device)
test_keys = [k for k in on_device if k.startswith("test_")]
worst_train, off_train = gap(on_device, trained, test_keys)
# the probabilities each mode=eval wrote (predictions.csv, 6 decimals), text by text
pa, pb = (pd.read_csv(folder / run / "predictions.csv") for run in ("eval_device", "eval_cpu"))
columns = [c for c in pa.columns if c.startswith("p_")]
same_rows = list(pa["text"]) == list(pb["text"])
prob_gap = float((pa[columns] - pb[columns]).abs().to_numpy().max()) if same_rows else math.inf
flips = int((pa["predicted"] != pb["predicted"]).sum()) if same_rows else len(pa)
# the parameters: the saved run loaded on the device and on the CPU
_, a = load_run(None, device, folder / "train")
_, b = load_run(None, "cpu", folder / "train")
sa, sb = a.model.state_dict(), b.model.state_dict()
params = sum(v.numel() for v in a.model.parameters())
same_keys = sa.keys() == sb.keys()
param_gap = max((float((sa[k].detach().cpu().float() - sb[k].float()).abs().max()) if sa[k].numel() else 0.0)
                for k in sa) if same_keys else math.inf
ok = not off and not off_train and same_keys and param_gap == 0.0 and prob_gap <= prob_tol and flips == 0
detail = (f"{len(on_device)} metrics, {device} vs cpu max diff {worst:.1e}; train-time test metrics vs reloaded "
          f"max diff {worst_train:.1e}; probabilities of {len(pa)} texts max diff {prob_gap:.1e}, {flips} "
          f"predictions differ; {params} parameters, {device} load vs cpu load max diff {param_gap:.1e} "
          f"(precision {getattr(a, 'precision', 'fp32')})")
if off or off_train:
    detail += "; off: " + "; ".join(off + [f"train {o}" for o in off_train])[:300]
row = {"check": f"family {model}", "status": "pass" if ok else "fail", "detail": detail,
       "test_accuracy": on_device.get("test_accuracy"), "parameters": params, "metric_gap": worst,
       "prob_gap": prob_gap}
with open(results, "a") as out:
    out.write(json.dumps(row) + "\n")
print(detail)
EOF
  code=$?
  if ((code != 0)); then
    record "family $model" fail "comparison: $(why "$code" "$dir/compare.log")"
  else
    echo "[$(($(date +%s) - START))s] family $model: $(tail -n 1 "$dir/compare.log" | cut -c1-160)"
  fi
}

if ((code_env == 0)); then
  for model in $FAMILIES; do
    while (($(jobs -rp | grep -vc "^${smoke_pid:-none}\$") >= FAMILY_JOBS)); do
      wait -n
    done
    family "$model" &
  done
else
  record families skip "no $DEVICE"
fi
wait  # the families and the smoke sweep
if [[ -n $smoke_pid ]]; then
  code=$(cat "$smoke_rc" 2>/dev/null || echo 1)
  if ((code != 0 && code != 1)); then  # 1: cells failed, recorded by the sweep itself
    record "smoke matrix" fail "$(why "$code" "$smoke_log")"
  fi
fi

# ---- summary --------------------------------------------------------------------------------------------------------
"$PY" - "$RESULTS" "$OUT_DIR/summary.md" "$DEVICE" "$(($(date +%s) - START))" "$BUDGET" <<'EOF'
import json
import sys
from datetime import datetime

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out, device, elapsed, budget = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
failed = [r for r in rows if r["status"] == "fail"]
skipped = [r for r in rows if r["status"] == "skip"]
verdict = "FAIL" if failed else "PASS"
lines = [f"# gpu_check: {verdict}", "",
         f"device={device}; {elapsed}s of a {budget}s budget; {datetime.now():%Y-%m-%d %H:%M}; "
         f"{sum(r['status'] == 'pass' for r in rows)} passed, {len(failed)} failed, {len(skipped)} skipped", "",
         "| check | result | detail |", "|:--|:--|:--|"]
order = {"environment": 0, "precision": 1, "family": 2, "smoke": 3}
for r in sorted(rows, key=lambda r: order.get(r["check"].split()[0], 4)):
    detail = str(r["detail"]).replace("|", "/").replace("\n", " ")
    lines.append(f"| {r['check']} | {r['status']} | {detail} |")
if failed:
    lines += ["", "## Failed", ""] + [f"- {r['check']}: {r['detail']}" for r in failed]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failed else 0)
EOF
