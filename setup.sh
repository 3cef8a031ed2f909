#!/usr/bin/env bash
# Installs every dependency qed needs on a fresh Debian 12 machine, then builds Release.
# Idempotent: re-running only builds what changed.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git clang libclang-rt-14-dev clang-format
  libboost-dev libboost-system-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libyaml-cpp-dev libpcre2-dev libutf8proc-dev
  libseccomp-dev bubblewrap libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3 python3-venv python3-dev
  python3-sympy python3-numpy
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test-side Python: reference implementations we compare against (HF tokenizers, transformers' chat templates).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tools/requirements-test.txt

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
echo "setup: done (build/ is Release; run ./test.sh)"
