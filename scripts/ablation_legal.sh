#!/usr/bin/env bash
# The legal_charges ablation behind the README's results table: every arm and control, 3 seeds (replicates), the
# same 128 test cases for every arm and seed, 32 val cases drawn per seed, 2 generations, weight arms at 4 optimizer
# rounds a generation with lr 1e-3 (the sweep's better rate). Resumable: re-running continues where it stopped.
# On 2 CPU cores this takes hours (README: where the time goes); LIMIT/TEST_LIMIT/SEEDS scale it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${ABLATION_OUT:-runs/legal-ablation}
export PYTHONUNBUFFERED=1
W=(); for arm in w wh bt sft; do W+=(-I "$arm:steps=${STEPS:-4}" -I "$arm:lr=1e-3"); done
.venv/bin/sia-bench ablate --task legal_charges --improvers none,tool-only,h,w,wh,bt,sft,random-search \
  --seeds "${SEEDS:-3}" --limit "${LIMIT:-32}" --test-limit "${TEST_LIMIT:-128}" --generations 2 "${W[@]}" \
  --ablation-dir "$OUT"
for baseline in majority knn_vote tfidf_svm; do
  if ! ls "$OUT/baselines/baseline-legal_charges-$baseline-"*.json >/dev/null 2>&1; then
    .venv/bin/sia-bench baselines run --task legal_charges --limit "${LIMIT:-32}" --test-limit "${TEST_LIMIT:-128}" \
      --baseline "$baseline" --out "$OUT/baselines"
  fi
done
