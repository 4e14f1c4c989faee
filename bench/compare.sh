#!/usr/bin/env bash
# RawGan's `bench` command beside the same ProGAN iteration in two peers, back to back at the same
# sizes: PyTorch (bench/pytorch_progan.py, Debian's python3-torch 1.13) and TorchSharp
# (bench/torchsharp/, LibTorch 2.10 from NuGet: what a C# user would pick). Latent 128, fmap_base
# 2048, fmap_max 128, RGB, batch 16, fully grown, 2 threads. Prints each program's last line and
# RawGan's images/s over each peer's and over the best peer's.
#
#   bash bench/compare.sh                                     # 8x8 to 64x64
#   ROUNDS=3 RESOLUTIONS="8 16" bash bench/compare.sh         # alternating three times
#   RESOLUTIONS=8 ITERATIONS=1 WARMUP=0 bash bench/compare.sh # a quick check that all run
#
# Settings (environment): RESOLUTIONS ("8 16 32 64"), BATCH (16), THREADS (2), ITERATIONS (10),
# WARMUP (2), ROUNDS (1: with more, the programs alternate and every round is printed), PEERS
# ("pytorch torchsharp"), PYTHON (/usr/bin/python3: Debian's python3-torch lives there, not in a
# pyenv python). The TorchSharp peer is built on first use (bench/torchsharp/run.sh, which also
# builds the small libstdc++ stand-in it needs on Debian 12). The programs get the machine in turn;
# run it when nothing else is running, or compare ratios within a round. On a machine shared with
# other work, OMP_WAIT_POLICY=PASSIVE (which only the peers read) keeps their OpenMP threads from
# spinning at barriers, where a preempted partner stalls them (4 to 9 times slower, seen here).
set -euo pipefail
cd "$(dirname "$0")/.."

RESOLUTIONS=${RESOLUTIONS:-"8 16 32 64"}
BATCH=${BATCH:-16}
THREADS=${THREADS:-2}
ITERATIONS=${ITERATIONS:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
PEERS=${PEERS:-"pytorch torchsharp"}
PYTHON=${PYTHON:-/usr/bin/python3}

for peer in $PEERS; do
  case $peer in
    pytorch) "$PYTHON" -c "import torch" 2>/dev/null || { echo "PyTorch is missing for $PYTHON (Debian: apt-get install python3-torch)" >&2; exit 1; } ;;
    torchsharp) bash bench/torchsharp/run.sh --resolution 4 --iterations 1 --warmup 0 >/dev/null || { echo "the TorchSharp peer does not run (bash bench/torchsharp/run.sh)" >&2; exit 1; } ;;
    *) echo "unknown peer $peer (pytorch, torchsharp)" >&2; exit 2 ;;
  esac
done
echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# dotnet $(dotnet --version); $("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null || echo 'no torch'); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
dotnet build -c Release src/Trainer -nologo -v quiet >/dev/null

last_value() { sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' | tail -1; }
last_ms() { sed -n 's/.*ms_per_iter=\([0-9.]*\).*/\1/p' | tail -1; }

# Each program's output is shown as it runs and kept in a file, whose last line is parsed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
for r in $RESOLUTIONS; do
  for round in $(seq 1 "$ROUNDS"); do
    echo "## ${r}x${r}, batch $BATCH, $THREADS threads, round $round, load $(cut -d' ' -f1-3 /proc/loadavg)"
    dotnet run -c Release --no-build --project src/Trainer -- bench --preset small --resolution "$r" --batch "$BATCH" \
      --latent-size 128 --fmap-base 2048 --fmap-max 128 --threads "$THREADS" --device cpu --warmup "$WARMUP" --iterations "$ITERATIONS" | tee "$log"
    ours=$(tail -1 "$log" | last_value)
    line="${r}x${r} round $round: rawgan $(tail -1 "$log" | last_ms) ms"
    best=0
    ratios=""
    for peer in $PEERS; do
      args=(--resolution "$r" --batch "$BATCH" --fmap-base 2048 --fmap-max 128 --threads "$THREADS" --warmup "$WARMUP" --iterations "$ITERATIONS")
      case $peer in
        pytorch) "$PYTHON" bench/pytorch_progan.py --latent 128 "${args[@]}" | tee "$log" ;;
        torchsharp) bash bench/torchsharp/run.sh --latent 128 "${args[@]}" | tee "$log" ;;
      esac
      theirs=$(tail -1 "$log" | last_value)
      line+=" | $peer $(tail -1 "$log" | last_ms) ms"
      ratios+=" rawgan/$peer $(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')"
      best=$(awk -v a="$best" -v b="$theirs" 'BEGIN { print (b > a ? b : a) }')
    done
    summary+=("$line |$ratios | rawgan/best peer $(awk -v a="$ours" -v b="$best" 'BEGIN { printf "%.2f", a / b }') (images/s)")
  done
done
echo
printf '%s\n' "${summary[@]}"
