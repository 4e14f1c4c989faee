#!/usr/bin/env bash
# RawGan's test command: installs what the tests need on a bare Debian 12 machine (with sudo when
# not root), then runs the whole suite. Extra arguments go to `dotnet test` (e.g. --filter ...).
#
# Plain `dotnet test RawGan.sln -c Release` works too: tests that need NVRTC or the CUDA driver
# library are then skipped, each with the package to install, except under CI=true, where a
# missing library fails them.
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

command -v dotnet >/dev/null || { echo "test.sh: RawGan needs the .NET 10 SDK (dotnet) on PATH: https://dot.net" >&2; exit 1; }

packages=(
  g++                    # builds the kernels for the CUDA emulator
  libnvrtc11.2           # NVRTC: compiles every kernel to PTX and machine code (needs no GPU)
  libcuda1               # the CUDA driver library: loads and reports "no device" here
  libcublas11            # cuBLAS, bound for the kernel lab's GPU comparisons
  dataset-fashion-mnist  # the real data set used by --data fashion-mnist
  openmpi-bin            # mpirun, for the data-parallel tests
  libopenmpi3            # Open MPI (libmpi.so.40), bound by hand like the CUDA driver
)
if command -v dpkg >/dev/null && command -v apt-get >/dev/null; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # NVIDIA's libraries live in Debian's non-free component, which is off by default.
    sources=/etc/apt/sources.list.d/debian.sources
    if [ -f "$sources" ] && ! grep -q "non-free" "$sources"; then
      as_root sed -i 's/^Components: main$/Components: main contrib non-free/' "$sources"
    fi
    echo "test.sh: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
else
  echo "test.sh: not a Debian-like system; install NVRTC, the CUDA driver library, cuBLAS and g++ yourself (tests that need them skip otherwise)" >&2
fi

dotnet test RawGan.sln -c Release "$@"
