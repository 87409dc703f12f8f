#!/usr/bin/env bash
# README command 2: set up (idempotent) and run the whole test suite. Extra args go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the tests also cover the optional Ray extra (POLICYTRIM_WITH_RAY=0 leaves it out: its test skips)
POLICYTRIM_WITH_RAY=${POLICYTRIM_WITH_RAY:-1} bash "$repo/scripts/setup.sh"
cd "$repo"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 101 ))}
exec .venv/bin/python -m pytest test "$@"
