#!/usr/bin/env bash
# RawGan's `bench` command and the same ProGAN iteration in PyTorch (bench/pytorch_progan.py), back
# to back at the same sizes: latent 128, fmap_base 2048, fmap_max 128, RGB, batch 16, fully grown,
# 2 threads, at 32x32 and 64x64. Prints both programs' last lines and RawGan / PyTorch in images/s.
#
#   bash bench/compare.sh                       # the comparison of issue 5
#   RESOLUTIONS=8 ITERATIONS=1 WARMUP=0 bash bench/compare.sh   # a quick check that both run
#
# Settings (environment): RESOLUTIONS ("32 64"), BATCH (16), THREADS (2), ITERATIONS (5),
# WARMUP (2), ROUNDS (1: with more, the two programs alternate and every round is printed),
# PYTHON (/usr/bin/python3: Debian's python3-torch lives there, not in a pyenv python).
# Both programs get the whole machine in turn; run it when nothing else is running.
set -euo pipefail
cd "$(dirname "$0")/.."

RESOLUTIONS=${RESOLUTIONS:-"32 64"}
BATCH=${BATCH:-16}
THREADS=${THREADS:-2}
ITERATIONS=${ITERATIONS:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
PYTHON=${PYTHON:-/usr/bin/python3}

"$PYTHON" -c "import torch" 2>/dev/null || { echo "PyTorch is missing for $PYTHON (Debian: apt-get install python3-torch)" >&2; exit 1; }
echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# dotnet $(dotnet --version); $("$PYTHON" -c 'import torch; print("torch", torch.__version__)'); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
dotnet build -c Release src/Trainer -nologo -v quiet >/dev/null

last_value() { sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' | tail -1; }

# Each program's output is shown as it runs and kept in a file, whose last line is parsed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
for r in $RESOLUTIONS; do
  for round in $(seq 1 "$ROUNDS"); do
    echo "## ${r}x${r}, batch $BATCH, $THREADS threads, round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    dotnet run -c Release --no-build --project src/Trainer -- bench --preset small --resolution "$r" --batch "$BATCH" \
      --latent-size 128 --fmap-base 2048 --fmap-max 128 --threads "$THREADS" --device cpu --warmup "$WARMUP" --iterations "$ITERATIONS" | tee "$log"
    rawgan=$(tail -1 "$log")
    "$PYTHON" bench/pytorch_progan.py --resolution "$r" --batch "$BATCH" --latent 128 --fmap-base 2048 --fmap-max 128 \
      --threads "$THREADS" --warmup "$WARMUP" --iterations "$ITERATIONS" | tee "$log"
    torch=$(tail -1 "$log")
    a=$(echo "$rawgan" | last_value)
    b=$(echo "$torch" | last_value)
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')
    summary+=("${r}x${r} round $round: rawgan: $rawgan | pytorch: $torch | rawgan/pytorch images/s = $ratio")
  done
done
echo
printf '%s\n' "${summary[@]}"
