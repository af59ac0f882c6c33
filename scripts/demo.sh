#!/usr/bin/env bash
# The embedded default job: a small CPU ablation on legal_charges (LawBench-191) with the shipped SmolLM2-135M model,
# arms none / h / w / wh, one seed, 8 val and 8 test cases, 2 generations; then the leaderboard from its records.
# 8 min 16 s on 2 cores with the model cached (measured). Re-running resumes (finished arms are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-runs/demo}
.venv/bin/sia-bench ablate --task legal_charges --improvers none,h,w,wh --seeds 1 --limit 8 --generations 2 \
  -I h:minibatch=8 -I wh:minibatch=8 -I wh:plateau=1 --ablation-dir "$OUT/legal_charges-ablation"
.venv/bin/sia-bench leaderboard "$OUT" --out "$OUT/leaderboard"
echo "tables: $OUT/leaderboard/legal_charges.md   page: $OUT/leaderboard/index.html"
