#!/usr/bin/env bash
# Issue 32's evidence grids, cheap ones first, from a worktree at a fixed commit so that code
# edits in the checkout do not reach runs under way; results go into this checkout's
# results/evidence. Killed runs resume: start it again with the same commit.
#   scripts/run-evidence.sh WORKTREE   (e.g. git worktree add ../evidence-wt HEAD)
set -u
# under setsid this is its own autogroup: yield the CPU to interactive work (nice alone does not)
echo 19 > /proc/self/autogroup 2>/dev/null || true
tree=$(cd "${1:?usage: scripts/run-evidence.sh WORKTREE}" && pwd)
main=$(cd "$(dirname "$0")/.." && pwd)
cd "$tree"
export PYTHONPATH="$tree" LLMRL_CACHE_DIR="$main/.cache/llmrl" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for g in online-paper/grid-mix offline-paper/grid-mix alfworld-paper/grid-mix \
         online-paper/grid-local offline-paper/grid-local alfworld-paper/grid-local; do
  "$main/.venv/bin/llmrl" sweep "results/evidence/$g.yaml" --out "$main/results/evidence" \
    --workers 2 > "$main/results/evidence/${g/\//-}.log" 2>&1
done
