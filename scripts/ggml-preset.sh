#!/usr/bin/env bash
# CMAKE_ARGS for building ggml-python for a device class: `pip install` reads them at build time, e.g.
#   CMAKE_ARGS="$(bash scripts/ggml-preset.sh pi5)" pip install --no-cache-dir --no-binary ggml-python ggml-python==0.0.45
# The presets (x86-native x86-portable x86-baseline pi4 pi5 phone) and why each exists are in
# pocket_ggml/ggml_presets.py, which the runtime also reads to name the reinstall command for a slow
# build; it runs with the standard library alone, before the package is installed.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/../pocket_ggml/ggml_presets.py" "$@"
