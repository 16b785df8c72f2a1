#!/usr/bin/env bash
# Regenerates the calibration shipped for the default embedder, and its verification report, from the
# public half of LFW in ../shared/data. Thresholds are set on all impostor pairs among the images of
# View-2 folds 1-5 (7.26 M pairs); the file records the data, the FMR measured and the date.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
.venv/bin/streamproc evaluate verification \
    --pairs "$data/identity/lfw_pairs_folds1-5.txt" --images "$data/identity/lfw" \
    --report bench/reports/verification-dlib-resnet \
    --calibration-out streamproc/data/calibration/dlib-resnet-v1.json
