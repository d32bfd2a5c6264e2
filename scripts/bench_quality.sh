#!/usr/bin/env bash
# Held-out quality through the product path (`clipsam eval --subset test`), as reported in
# docs/BENCHMARKS.md; results go to docs/results/eval/<set>/<method>/ (per_image.csv,
# summary.json, run.json), then `scripts/make_tables.py` regenerates the tables.
#   [EMB=DIR] bash scripts/bench_quality.sh DATA_ROOT [SALIP_LIMIT] [TEXT_MODEL] [METHOD ...]
# TEXT_MODEL defaults to the shipped model, which is trained on the train part of the subject
# split only, so `--subset test` scores subjects it never saw (eval refuses otherwise).
# METHODs: which of gt-box, medclipsam and salip to run (default: all three).
# Embeddings are kept in $EMB (default runs/eval_emb; exact), so the methods share one encoder
# pass per image: the first method run on an empty store pays it (its seconds include it).
set -euo pipefail
data=${1:?data root}; salip_limit=${2:-20}; text_model=${3:-builtin}
shift $(( $# < 3 ? $# : 3 ))
methods=("$@"); [ ${#methods[@]} -gt 0 ] || methods=(gt-box medclipsam salip)
for m in "${methods[@]}"; do
  case $m in gt-box|medclipsam|salip) ;; *) echo "unknown method $m" >&2; exit 2 ;; esac
done
# The prompt of every set (scripts/benchmark_prompts.json, shared with the Python benchmarks).
declare -A prompts
while IFS=$'\t' read -r name prompt; do prompts[$name]=$prompt; done < <(
  .venv/bin/python -c 'import json, sys; [print(k, v, sep="\t") for k, v in json.load(sys.stdin).items()]' \
    < scripts/benchmark_prompts.json)
clipsam=.venv/bin/clipsam
out=docs/results/eval
common=(--subset test --embedding-cache "${EMB:-runs/eval_emb}" --overwrite)
for set in hc18 cxr_lungs jsrt_heart isic_skin kvasir_polyp busi ddti_thyroid dsb_nuclei \
           lgg_flair ddsm_pectoral jsrt_clavicles; do
  p=${prompts[$set]}
  for m in "${methods[@]}"; do
    case $m in
      gt-box) $clipsam -q eval "$data/$set" "${common[@]}" --method gt-box --out "$out/$set/gt-box" ;;
      medclipsam) $clipsam -q eval "$data/$set" "${common[@]}" --method medclipsam --prompt "$p" \
                    --text-model "$text_model" --out "$out/$set/medclipsam" ;;
      salip) $clipsam -q eval "$data/$set" "${common[@]}" --method salip --prompt "$p" \
               --text-model "$text_model" --limit "$salip_limit" --out "$out/$set/salip" ;;
    esac
  done
done
