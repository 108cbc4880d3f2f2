#!/usr/bin/env bash
# Gradescope's one-time set-up: install the instructor's tinylora (the reference) and the test tools.
set -eu
cd /autograder/source
python3 -m pip install -e '.[test]'
