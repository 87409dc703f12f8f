#!/usr/bin/env bash
# README command 1: set up (idempotent) and run the embedded demo. Extra args go to `policytrim demo`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
exec .venv/bin/policytrim demo "$@"
