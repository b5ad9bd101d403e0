#!/usr/bin/env bash
# Compute a leaderboard's grid on this machine, resumably: every built-in method on one suite under
# the tuned protocol (trials on validation, then the chosen and the default rate on test, 3 seeds),
# then the curvature at init of every method (issue 17).  One sweep per method, so each method is
# complete (its tuned finals included) before the next starts; a run already finished in OUT is
# skipped, so rerunning this script after an interruption resumes where it stopped.
#
#   bash scripts/campaign.sh [OUT] [SUITE]        # defaults: campaigns/v0, mini
#
# Run it from a git worktree pinned to one commit (so edits on main cannot change the grid midway),
# with OUT outside that worktree, e.g. from /work/wt-v0:
#   nohup bash scripts/campaign.sh /work/main/campaigns/v0 > /work/main/campaigns/v0.log 2>&1 &
# `initbench status OUT` shows progress.  Execution mode (recorded in every row; `reproduce` reruns a
# row in it): bf16 autocast, the labelled-positions loss, 2 processes x 1 thread on a 2-core CPU.
# Needs the public data under $INITBENCH_DATA_DIR (default ../shared/data): corda-kpm's calibration
# and the forgetting held set read NQ-open from it.
set -euo pipefail

OUT=${1:-campaigns/v0}
SUITE=${2:-mini}
SEEDS=${SEEDS:-0,1,2}
WORKERS=${WORKERS:-2}
export INITBENCH_DATA_DIR=${INITBENCH_DATA_DIR:-../shared/data}
export INITBENCH_FAST=1

# The three questions of issue 13 first (Init[A] vs Init[B], PiSSA / LoRA-GA convergence), then the
# rest, full fine-tuning (the most expensive run) last.  `fisher-svd` is an alias of `fwsvd`.
PRIORITY=(base lora lora-reversed pissa lora-ga olora milora)
mapfile -t ALL < <(python -c "from initbench.method.registry import method_names; print('\n'.join(method_names()))")
METHODS=("${PRIORITY[@]}")
for m in "${ALL[@]}"; do
  case " ${PRIORITY[*]} fisher-svd full-ft " in *" $m "*) ;; *) METHODS+=("$m") ;; esac
done
METHODS+=(full-ft)

echo "campaign: suite $SUITE, ${#METHODS[@]} methods, seeds $SEEDS, out $OUT, commit $(git rev-parse --short HEAD)"
# Record the whole grid first (the plan one sweep of every method would write), so `initbench status OUT`
# counts the methods not started yet as missing instead of not listing them.
python - "$SUITE" "$SEEDS" "$OUT" "${METHODS[@]}" <<'PY'
import sys
from pathlib import Path
from initbench.method.registry import get_method
from initbench.spec.suite import load_suite
from initbench.sweeps.sweep import write_plan
suite, seeds, out, *methods = sys.argv[1:]
write_plan(load_suite(suite), [get_method(m) for m in methods], [int(s) for s in seeds.split(",")], Path(out), "tuned", None)
PY
for m in "${METHODS[@]}"; do
  echo "== $(date -u +%FT%TZ) sweep $m"
  initbench sweep --suite "$SUITE" --method "$m" --seeds "$SEEDS" --protocol tuned --out "$OUT" \
    --workers "$WORKERS" --threads-per-run 1 --precision bf16-autocast || echo "campaign: $m had failed runs"
done
echo "== $(date -u +%FT%TZ) curvature at init, seed 0"
half=$(( (${#METHODS[@]} + 1) / 2 ))
curvature() {
  for m in "$@"; do
    case $m in base | full-ft) continue ;; esac  # no adapter: curvature at init does not apply
    OMP_NUM_THREADS=1 INITBENCH_THREADS=1 initbench curvature --suite "$SUITE" --method "$m" \
      --seeds 0 --out "$OUT" || echo "campaign: curvature of $m failed"
  done
}
curvature "${METHODS[@]:0:$half}" & curvature "${METHODS[@]:$half}" & wait
echo "== $(date -u +%FT%TZ) campaign done: initbench status $OUT"
