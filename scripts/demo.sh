#!/usr/bin/env bash
# The embedded default job: a small CPU ablation on legal_charges (LawBench-191) with the shipped SmolLM2-135M model,
# arms none / h / w / wh, one seed, 8 val and 8 test cases, 2 generations; the tool-only control (the harness's own
# tools answer, no model call: what the tools give without the model); the classical baselines on the same cases;
# then the leaderboard, with a paragraph saying what it shows. Re-running resumes: finished runs and baselines are not
# redone. When the output is not a terminal (make demo > log 2>&1), progress comes as plain timestamped lines.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-runs/demo}
export PYTHONUNBUFFERED=1  # progress lines and the step headers below stay in order in a log
SIA=.venv/bin/sia-bench
COMMON=(--task legal_charges --seeds 1 --limit 8 --generations 2)
echo "[demo] 1/4 ablation: none, h, w, wh"
$SIA ablate "${COMMON[@]}" --improvers none,h,w,wh -I h:minibatch=8 -I wh:minibatch=8 \
  --ablation-dir "$OUT/legal_charges-ablation"
echo "[demo] 2/4 tool-only control: the harness's tools answer (TF-IDF top candidate), no model call"
$SIA ablate "${COMMON[@]}" --improvers tool-only --ablation-dir "$OUT/legal_charges-tools"
echo "[demo] 3/4 baselines on the same 8 + 8 cases"
for baseline in majority knn_vote tfidf_svm; do
  if ! ls "$OUT/baselines/baseline-legal_charges-$baseline-"*.json >/dev/null 2>&1; then
    $SIA baselines run --task legal_charges --limit 8 --baseline "$baseline" --out "$OUT/baselines"
  fi
done
echo "[demo] 4/4 leaderboard"
$SIA leaderboard "$OUT" --out "$OUT/leaderboard" --intro scripts/demo_intro.md
echo "tables: $OUT/leaderboard/legal_charges.md   page: $OUT/leaderboard/index.html"
