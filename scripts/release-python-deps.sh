#!/usr/bin/env bash
# Installs what tests/python/release_support.py needs into the current Python (the release workflow's, after
# actions/setup-python), at the versions tests/python/requirements.txt pins. Locally the release scripts use
# scripts/test.sh's .venv instead, which has it all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
"${PYTHON:-python3}" -m pip install --disable-pip-version-check --no-input \
    -c tests/python/requirements.txt -r .github/release-requirements.txt
