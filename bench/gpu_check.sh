#!/usr/bin/env bash
# One short GPU check for the lent machine (<= 8 minutes): nvidia-smi facts, then bench/gpu_check.py (SFace built
# there from its int8 source by the product's converter and checked against the pinned sha256; the default models,
# RetinaFace + SFace, and YuNet through PyTorch on CUDA in fp32/fp16, agreement on real chips and frames, K native
# 1080p15 streams; the product's VideoSource decoding with hwaccel cuda (NVDEC) and on the CPU; CPU onnxruntime).
# Last line: gpu_streams_1080p15=... p95_decision_ms=...
#
# Here, first (project venv; also downloads the PyAV and pydantic wheels the machine lacks, ~55 MiB in all):
#                              python bench/gpu_check.py prepare --out bench/.gpu_models
# There (carry bench/.gpu_models): bash bench/gpu_check.sh [MODELS_DIR] [extra gpu_check.py run args]
# Output is also written to $OUT/gpu_check.log when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
models="${1:-bench/.gpu_models}"
shift || true
log="${OUT:-/tmp}/gpu_check.log"
export PYTHONUNBUFFERED=1
{
  # Wheels carried in the models folder (PyAV, whose bundled FFmpeg has NVDEC; pydantic) install offline.
  if compgen -G "$models/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site \
      "$models"/*.whl && export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  echo "== $(date -u +%FT%TZ) $(uname -m) $(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit,compute_mode \
      --format=csv || echo "nvidia-smi query failed"
  else
    echo "nvidia-smi: not found"
  fi
  python3 -c 'import sys, numpy, torch; print("python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, "cuda available:", torch.cuda.is_available())'
  for pkg in onnxruntime av cv2; do
    python3 -c "import $pkg; print('$pkg', getattr($pkg, '__version__', '?'))" 2>/dev/null || echo "$pkg: not installed"
  done
  timeout 450 python3 bench/gpu_check.py run --models "$models" "$@" | tee /tmp/gpu_check_py.out
  status=${PIPESTATUS[0]}
  echo "gpu_check.py exit status $status"
  # The headline last: gpu_streams_1080p15=... p95_decision_ms=... (not_run when the check did not get there).
  tail -n 1 /tmp/gpu_check_py.out | grep '^gpu_streams_1080p15=' || echo "gpu_streams_1080p15=not_run p95_decision_ms=nan"
} 2>&1 | tee "$log"
