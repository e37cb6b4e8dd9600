#!/usr/bin/env bash
# Prints where cargo puts its build output: CARGO_TARGET_DIR, a `build.target-dir` in a cargo
# config, or ./target. Asked of cargo, so the scripts find the binaries wherever they are.
set -euo pipefail
cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
