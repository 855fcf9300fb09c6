#!/usr/bin/env bash
# Fresh machine -> everything installed -> the main job run on the embedded defaults
# (local CPU device, SQLite store at out/edgebench.sqlite, bundled data). Report in out/<name>/report/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/edgebench run "${1:-examples/har_l2mu.toml}"
