#!/usr/bin/env bash
# Build a benchmark as a Ray job on a running Ray cluster (one task per case;
# segmenting cases ask for GPUs with --gpus-per-task):
#   bash pipelines/ray/build_qa_job.sh data_manifests/my.yaml out/my [--segmenter monai:runs/seg --gpus-per-task 1]
# RAY_ADDRESS (e.g. http://head:8265) says which cluster `ray job submit` talks to.
set -euo pipefail
MANIFEST=${1:?manifest}
OUT=${2:?output folder}
shift 2
exec ray job submit --working-dir . -- volvqa build-qa "$MANIFEST" --out "$OUT" --engine ray --ray-address auto "$@"
