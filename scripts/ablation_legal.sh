#!/usr/bin/env bash
# The legal_charges ablation behind the README's results table. The same 256 test cases for every arm and seed, 64 val
# cases drawn per seed from a pool of 256 (-T val_size), 2 generations, one compute ceiling for every arm (2e14
# estimated FLOPs, test excluded; the rollout cap is lifted so FLOPs are the one unit), the weight arms at their
# defaults (GRPO, 8 rounds a generation, lr 1e-3, continuing the run's trained adapter). Stage 1: the start-harness
# arms and controls with SEEDS seeds (none, tool-only, w, sft, best-of-n); stage 2: the harness-editing arms (h, wh)
# with HSEEDS seeds, seed by seed; they cost several times more per case (their edits lengthen the prompt); stage 3:
# the controls that edit the harness (random-search, bt) with CSEEDS seeds, seed by seed, then random-search at the
# proposer's edit budget. Resumable: re-running continues where it stopped. LIMIT / TEST_LIMIT / SEEDS / HSEEDS /
# CSEEDS scale it; DTYPE (unset: float32, or bfloat16: on CPUs with AMX-BF16 inference ~2.2x faster, training not; the
# README's Speed section) is the task model's precision, part of the model's identity, so runs of different precision
# never pool. Run it with nothing else on the CPU: a second torch process on the 2 cores made a 256-case test pass
# take 461 s instead of 112 s.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${ABLATION_OUT:-runs/legal-ablation}
export PYTHONUNBUFFERED=1
COMMON=(--task legal_charges -T val_size=256 --limit "${LIMIT:-64}" --test-limit "${TEST_LIMIT:-256}" --generations 2
        --budget compute_flops=2e14 --budget task_rollouts=1000000 --workers 1
        --memo-dir "$OUT/memo")  # one result memo for every stage: e.g. bt reuses wh's val passes of the same edit
if [ -n "${DTYPE:-}" ]; then COMMON+=(-M "dtype=$DTYPE"); fi  # unset: the model's default (float32 on CPU)
.venv/bin/sia-bench ablate "${COMMON[@]}" --improvers none,tool-only,w,sft,best-of-n --seeds "${SEEDS:-3}" \
  --ablation-dir "$OUT/start-arms"
for seed in $(seq 0 $((${HSEEDS:-3} - 1))); do  # one folder per seed: h and wh of a seed finish before the next
  .venv/bin/sia-bench ablate "${COMMON[@]}" --improvers h,wh --seeds 1 --seed-start "$seed" \
    --ablation-dir "$OUT/harness-arms-s$seed"
done
for seed in $(seq 0 $((${CSEEDS:-3} - 1))); do
  .venv/bin/sia-bench ablate "${COMMON[@]}" --improvers random-search,bt --seeds 1 --seed-start "$seed" \
    --ablation-dir "$OUT/control-arms-s$seed"
done
# random-search with 4 edits a generation, the heuristic proposer's edit budget: with the default 1 edit half the
# draws change nothing on the start harness (5 of legal_charges' 10 searchable parameters hold its value already or
# tune retrieval and demonstrations it does not use; 3 of the 6 draws in the 1-edit runs were such)
.venv/bin/sia-bench ablate "${COMMON[@]}" --improvers random-search -I random-search:edits=4 --seeds "${CSEEDS:-3}" \
  --ablation-dir "$OUT/control-arms-rs4"
for baseline in majority knn_vote tfidf_svm; do
  if ! ls "$OUT/baselines/baseline-legal_charges-$baseline-"*.json >/dev/null 2>&1; then
    .venv/bin/sia-bench baselines run --task legal_charges -T val_size=256 --limit "${LIMIT:-64}" \
      --test-limit "${TEST_LIMIT:-256}" --baseline "$baseline" --out "$OUT/baselines"
  fi
done
