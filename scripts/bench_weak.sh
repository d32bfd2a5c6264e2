#!/usr/bin/env bash
# Weak supervision (issue #12) through the documented commands, as reported in
# docs/BENCHMARKS.md ("Weak supervision"): for each set, `clipsam weak-train` labels the TRAIN
# part of the subject split with the shipped text model (the teacher; expert masks are never
# read) and trains the network; `clipsam eval --subset test` then scores the network alone
# (`weak`) and its mask as box prompts for LiteMedSAM (`weak-box`) on held-out subjects, beside
# the teacher itself (`medclipsam`, into weak-teacher/), all without stored embeddings so that
# the times per image are what a user waits for, in one run on one machine.
#   bash scripts/bench_weak.sh DATA_ROOT [SET ...]
#   bash scripts/bench_weak.sh DATA_ROOT --self-train SET ...
#   bash scripts/bench_weak.sh DATA_ROOT --head [SET ...]
#   bash scripts/bench_weak.sh DATA_ROOT --rules SET ...
# Models go to runs/weak/<set> (a rerun resumes them); results to docs/results/eval/<set>/weak*
# and each model's config.json (settings, images used, training time) to
# docs/results/weak/<set>.json; then `scripts/make_tables.py` regenerates the table.
# --self-train: one round of self-training for sets already done: the first network's boxes,
# refined by LiteMedSAM (`--method weak-box --model runs/weak/<set>`), label the same images
# again and a new network trains on them (runs/weak-self/<set>); it is scored the same way
# (results weak-self, weak-self-box; config docs/results/weak/<set>-self.json).
# --head: `weak-train --network head` (a head on LiteMedSAM's locked image embedding) on the
# same pseudo-masks (the first run's, copied: same teacher and settings, which weak-train
# checks), into runs/weak-head/<set>; results weak-head, weak-head-box; config
# docs/results/weak/<set>-head.json.
# --rules: the teacher-confidence rule against its alternatives, with the U-Net on the same
# pseudo-masks (copied): not-found images as background (runs/weak-rules/<set>-background,
# results weak-background, weak-background-box) and no down-weighting of the pixels where the
# teacher's map and mask disagree (<set>-weight1, results weak-weight1, weak-weight1-box).
set -euo pipefail
data=${1:?data root}; shift
self=0; head=0; rules=0
[ "${1:-}" = "--self-train" ] && { self=1; shift; }
[ "${1:-}" = "--head" ] && { head=1; shift; }
[ "${1:-}" = "--rules" ] && { rules=1; shift; }
# The prompt of every set (scripts/benchmark_prompts.json, shared with the Python benchmarks).
declare -A prompts
while IFS=$'\t' read -r name prompt; do prompts[$name]=$prompt; done < <(
  .venv/bin/python -c 'import json, sys; [print(k, v, sep="\t") for k, v in json.load(sys.stdin).items()]' \
    < scripts/benchmark_prompts.json)
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(ddti_thyroid lgg_flair hc18 cxr_lungs kvasir_polyp dsb_nuclei busi
                               jsrt_heart jsrt_clavicles isic_skin ddsm_pectoral)
clipsam=.venv/bin/clipsam
mkdir -p docs/results/weak
# train DIR SUFFIX ARGS...: `weak-train ARGS` into DIR (resumed if it has a checkpoint); config
# -> <set>SUFFIX.json, held-out results weakSUFFIX and weakSUFFIX-box.
train() {
  local dir=$1 suffix=$2; shift 2
  local resume=(); [ -f "$dir/checkpoint.pt" ] && resume=(--resume)
  $clipsam -q weak-train "$data/$set" --subset train -p "$p" "$@" --out "$dir" "${resume[@]}"
  cp "$dir/config.json" "docs/results/weak/$set$suffix.json"
  for method in weak weak-box; do
    $clipsam -q eval "$data/$set" --subset test --method $method --model "$dir" \
      --prompt "$p" --overwrite --out "docs/results/eval/$set/${method/weak/weak$suffix}"
  done
}
# variant DIR NAME ARGS...: the first network's pseudo-masks (copied) train a network with
# weak-train ARGS into DIR; config -> <set>-NAME.json, results weak-NAME, weak-NAME-box.
variant() {
  local dir=$1 name=$2; shift 2
  if [ ! -d "$dir/pseudo" ] && [ -d "$model/pseudo" ]; then
    mkdir -p "$dir"; cp -r "$model/pseudo" "$dir/pseudo"
  fi
  train "$dir" "-$name" "$@"
}
for set in "${sets[@]}"; do
  p=${prompts[$set]}
  model=runs/weak/$set
  if [ $self = 1 ]; then
    train runs/weak-self/$set -self --method weak-box --model "$model"
    continue
  fi
  if [ $rules = 1 ]; then
    variant runs/weak-rules/$set-background background --not-found background
    variant runs/weak-rules/$set-weight1 weight1 --uncertain-weight 1
    continue
  fi
  if [ $head = 1 ]; then
    variant runs/weak-head/$set head --network head
    continue
  fi
  train "$model" ""
  $clipsam -q eval "$data/$set" --subset test --method medclipsam --prompt "$p" \
    --overwrite --out "docs/results/eval/$set/weak-teacher"
done
