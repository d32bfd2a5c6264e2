#!/usr/bin/env bash
# Held-out quality through the product path (`clipsam eval --subset test`), as reported in
# docs/BENCHMARKS.md; results go to docs/results/eval/<set>/<method>/ (per_image.csv,
# summary.json, run.json), then `scripts/make_tables.py` regenerates the tables.
#   bash scripts/bench_quality.sh DATA_ROOT [SALIP_LIMIT] [TEXT_MODEL]
# TEXT_MODEL defaults to the shipped model, which is trained on the train part of the subject
# split only, so `--subset test` scores subjects it never saw (eval refuses otherwise).
# Embeddings are kept in runs/eval_emb (exact), so the methods share one encoder pass per image.
set -euo pipefail
data=${1:?data root}; salip_limit=${2:-20}; text_model=${3:-builtin}
declare -A prompts=([hc18]="fetal head" [busi]="breast tumour" [cxr_lungs]="left and right lungs"
                    [lgg_flair]="brain tumour" [kvasir_polyp]="polyp" [jsrt_heart]="heart"
                    [jsrt_clavicles]="clavicles" [ddti_thyroid]="thyroid nodule"
                    [dsb_nuclei]="cell nuclei" [isic_skin]="skin lesion"
                    [ddsm_pectoral]="pectoral muscle")
clipsam=.venv/bin/clipsam
out=docs/results/eval
common=(--subset test --embedding-cache runs/eval_emb --overwrite)
for set in hc18 cxr_lungs jsrt_heart isic_skin kvasir_polyp busi ddti_thyroid dsb_nuclei \
           lgg_flair ddsm_pectoral jsrt_clavicles; do
  p=${prompts[$set]}
  $clipsam -q eval "$data/$set" "${common[@]}" --method gt-box --out "$out/$set/gt-box"
  $clipsam -q eval "$data/$set" "${common[@]}" --method medclipsam --prompt "$p" \
    --text-model "$text_model" --out "$out/$set/medclipsam"
  $clipsam -q eval "$data/$set" "${common[@]}" --method salip --prompt "$p" \
    --text-model "$text_model" --limit "$salip_limit" --out "$out/$set/salip"
done
