#!/usr/bin/env bash
# SGEMM GFLOP/s on square matrices 512, 1024, 2048: OpenBLAS (Debian's libopenblas0-pthread, with
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for that command only, so that it picks its own
# AVX-512 kernel; the line says which core it runs) beside RawGan's SGEMMs and the fp32 FMA peak
# measured from C# (bench/RawGan.Benchmarks --gemm).
#
#   bash bench/gemm_compare.sh            # THREADS=2 by default
#   ROUNDS=3 bash bench/gemm_compare.sh   # alternate the two programs three times (on a shared or
#                                         # virtual machine, compare the best of the rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/sgemm_openblas" bench/sgemm_openblas.c -ldl -lm
dotnet build -c Release bench/RawGan.Benchmarks -nologo -v quiet >/dev/null
for round in $(seq 1 "$ROUNDS"); do
  echo "# round $round; load $(cut -d' ' -f1-3 /proc/loadavg)"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$work/sgemm_openblas" "$THREADS"
  dotnet run -c Release --no-build --project bench/RawGan.Benchmarks -- --gemm --threads "$THREADS"
done
