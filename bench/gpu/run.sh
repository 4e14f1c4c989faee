#!/usr/bin/env bash
# RawGan's GPU checks and benchmarks, run from inside the bundle (bench/gpu/bundle.sh) on a
# machine with an NVIDIA GPU; no .NET, no network needed.
#
#   ./run.sh [--device cuda|cuda:N|cuda-emulated] [--out DIR] [--quick]
#
#   --device  default cuda. cuda-emulated runs the CUDA backend's kernels on the CPU (g++ needed),
#             to try this script without a GPU; it implies --quick.
#   --out     default $OUT if set, else ./gpu-results. It receives two files only:
#             summary.txt (one line per step: exit code, seconds, the step's key line) and
#             results.tar.gz (every step's output, BUNDLE.txt, BenchmarkDotNet's reports).
#             Both are rewritten after every step, so a run cut short still leaves them.
#   --quick   tiny sizes (tiny preset, 8x8 and 16x16, one iteration): the whole script in seconds
#             to a few minutes.
#
# Every step has a time limit (timeout), its stdout and stderr go to its own log, and a failing
# step does not stop the ones after it. The limits sum to under 7.5 minutes, and a total budget
# (RAWGAN_GPU_BUDGET_S, default 420 s) cuts the last steps short if the earlier ones ran long.
# Exit code: 0 if every step exited 0, 1 otherwise, 2 for a usage error.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
device=cuda
quick=0
out=${OUT:-./gpu-results}
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) [[ $# -ge 2 ]] || { echo "run.sh: --device needs a value" >&2; exit 2; }; device=$2; shift 2 ;;
    --device=*) device=${1#*=}; shift ;;
    --out) [[ $# -ge 2 ]] || { echo "run.sh: --out needs a folder" >&2; exit 2; }; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case $device in
  cuda|cuda:[0-9]*) ;;
  cuda-emulated) quick=1 ;;
  *) echo "run.sh: --device must be cuda, cuda:N or cuda-emulated, not '$device'" >&2; exit 2 ;;
esac

rawgan=$here/rawgan
lab=$here/bench/RawGan.Benchmarks
[[ -f $rawgan ]] || { echo "run.sh: no rawgan next to this script ($here): run it from the bundle that bench/gpu/bundle.sh makes" >&2; exit 2; }
[[ -x $rawgan ]] || chmod +x "$rawgan" "$lab" 2>/dev/null
[[ -f $lab && ! -x $lab ]] && chmod +x "$lab" 2>/dev/null

mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/rawgan-gpu.XXXXXX") || exit 2
logs=$work/results
mkdir -p "$logs"
trap 'rm -rf "$work"' EXIT
summary=$out/summary.txt
cp "$here/BUNDLE.txt" "$logs/" 2>/dev/null

# Kernels compiled by NVRTC (or g++ for the emulator) are cached; a cache of this run's own keeps
# a run from reusing another build's binaries and puts the compile time in the first step that needs it.
export RAWGAN_CACHE_DIR=${RAWGAN_CACHE_DIR:-$work/kernel-cache}
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

# NVRTC and cuBLAS: a CUDA toolkit's lib64, or PyTorch's pip wheels (nvidia/cuda_nvrtc/lib and
# nvidia/cublas/lib; CUDA 13's wheels share nvidia/cu13/lib) under any Python's site-packages.
libdirs=()
add_dir() { local d; for d in "$@"; do [[ -d $d ]] || continue; case " ${libdirs[*]-} " in *" $d "*) ;; *) libdirs+=("$d") ;; esac; done; }
sites=()
for py in python3 python; do
  command -v "$py" > /dev/null 2>&1 || continue
  while IFS= read -r sp; do [[ -n $sp ]] && sites+=("$sp"); done \
    < <(timeout 20 "$py" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
done
sites+=(/usr/local/lib/python3*/dist-packages /usr/local/lib/python3*/site-packages /usr/lib/python3/dist-packages
        /opt/conda/lib/python3*/site-packages "${HOME:-/root}"/.local/lib/python3*/site-packages)
for sp in "${sites[@]}"; do
  for d in "$sp"/nvidia/*/lib; do
    compgen -G "$d/libnvrtc.so*" > /dev/null || compgen -G "$d/libcublas.so*" > /dev/null && add_dir "$d"
  done
done
add_dir /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-1[0-9]*/lib64
if [[ ${#libdirs[@]} -gt 0 ]]; then
  joined=$(IFS=:; echo "${libdirs[*]}")
  export LD_LIBRARY_PATH=$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# Time: one deadline for all steps; a step gets the smaller of its own limit and what is left.
budget=${RAWGAN_GPU_BUDGET_S:-420}
t0=$(date +%s%N)
elapsed_ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }
failures=0

pack() {
  cp "$summary" "$logs/summary.txt"
  tar -C "$work" -czf "$out/.results.tar.gz.tmp" results && mv -f "$out/.results.tar.gz.tmp" "$out/results.tar.gz"
}

# step NAME LIMIT_S COMMAND...: runs COMMAND in the work folder, output to results/NAME.txt.
step() {
  local name=$1 limit=$2; shift 2
  local log=$logs/$name.txt left rc start ms note=
  left=$(( budget - $(elapsed_ms) / 1000 - 5 ))
  if (( left < 10 )); then
    printf '%-26s %4s %8s  %s\n' "$name" "-" "-" "skipped: the ${budget} s budget is spent" >> "$summary"
    failures=$((failures + 1)); pack; return
  fi
  (( limit > left )) && limit=$left
  echo "run.sh: $name (limit ${limit} s)"
  { printf '$'; printf ' %q' "$@"; printf '\n# limit %s s, LD_LIBRARY_PATH=%s\n' "$limit" "${LD_LIBRARY_PATH-}"; } > "$log"
  start=$(date +%s%N)
  (cd "$work" && timeout -k 5 "$limit" "$@") >> "$log" 2>&1 < /dev/null
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if (( rc == 124 || rc == 137 )); then note="timed out after ${limit} s"
  elif (( rc == 0 )); then
    note=$(grep -a -E '^ms_per_iter=|comparisons with the naive|Global total time|skipped: no CUDA device' "$log" | tail -1)
    [[ -n $note ]] || note=$(grep -a -E '^(cuda|nvrtc): ' "$log" | paste -sd ';' | cut -c1-200)
  fi
  [[ -n ${note-} ]] || note=$(grep -a -v -E '^[[:space:]+|=-]*$' "$log" | tail -1 | cut -c1-160)
  (( rc != 0 )) && failures=$((failures + 1))
  printf '%-26s %4s %7d.%01d  %s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000 / 100)) "$note" >> "$summary"
  pack
}

environment() {
  echo "date:   $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host:   $(uname -a)"
  echo "cpu:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"
  echo "memory: $(grep MemTotal /proc/meminfo 2>/dev/null | awk '{print $2 / 1048576 " GiB"}')"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}"
  echo "RAWGAN_CACHE_DIR=$RAWGAN_CACHE_DIR"
  echo "## CUDA libraries the loader can see"
  { ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc|libcublas' | sed 's/^[[:space:]]*//'
    local d; for d in "${libdirs[@]}"; do ls -1 "$d" 2>/dev/null | grep -E '^lib(nvrtc|cublas)' | sed "s|^|$d/|"; done; } | sort -u
  echo "## python / torch"
  if command -v python3 > /dev/null 2>&1; then
    timeout 15 python3 -c 'import sys; print("python", sys.version.split()[0])
try:
    import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
except Exception as e: print("torch: not importable:", e)' 2>&1
  else
    echo "python3: not installed"
  fi
}

if (( quick )); then
  small=(--preset tiny --resolution 8 --batch 16 --warmup 1 --iterations 1)
  launch=(--preset tiny --resolution 4 --batch 8 --warmup 2 --iterations 2)
  big=(--preset tiny --resolution 16 --batch 16 --warmup 0 --iterations 1)
  lab_gpu=(--smoke --inProcess --job dry --filter '*Gpu*')
else
  small=(--preset small --resolution 32 --batch 16)
  # Launch-bound: the 8x8 step, where one graph launch replaces about a thousand kernel launches.
  launch=(--preset small --resolution 8 --batch 16 --warmup 3 --iterations 20)
  big=(--preset paper --resolution 256 --batch 16 --warmup 1 --iterations 3)
  # A few cases: each one's [GlobalSetup] runs the naive CPU reference (seconds, one thread) per variant.
  lab_gpu=(--inProcess --job short --filter '*GpuGemm*square 1024*' '*GpuGemm*conv as GEMM*' '*GpuConv*G/D 32*' '*GpuConv*G.conv1 64*')
fi
# Limits of the GPU run: 20 + 10 + 20 + 75 + 45 + 40 + 90 + 30 + 30 + 45 + 90 + 20 + 90 = 605 s at most, and the budget cuts at 420 s
# (the steps are in order of value: what does not fit is skipped and said so).
if [[ $device == cuda-emulated ]]; then l_check=150 l_bench=90 l_profile=90; else l_check=75 l_bench=45 l_profile=40; fi

{
  echo "# RawGan GPU run: --device $device$( ((quick)) && echo ' --quick'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname)"
  echo "# bundle: $(grep -m1 '^commit:' "$here/BUNDLE.txt" 2>/dev/null | cut -c10-)"
  if command -v nvidia-smi > /dev/null 2>&1; then
    echo "# gpu: $(timeout 10 nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>&1 | head -4 | paste -sd ';')"
  fi
  echo "# LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}"
  printf '%-26s %4s %9s  %s\n' "step" "rc" "seconds" "note"
} > "$summary"
pack

{ declare -p libdirs; declare -f environment; echo environment; } > "$work/environment.sh"
step environment      20 bash "$work/environment.sh"
if command -v nvidia-smi > /dev/null 2>&1; then
  step nvidia-smi     10 nvidia-smi
else
  printf '%-26s %4s %8s  %s\n' "nvidia-smi" "-" "-" "skipped: not installed" >> "$summary"
fi
step info             20 "$rawgan" info
step check       "$l_check" "$rawgan" check --device "$device"
step bench-"${small[1]}"-"${small[3]}"         "$l_bench" "$rawgan" bench --device "$device" "${small[@]}"
step bench-"${small[1]}"-"${small[3]}"-profile "$l_profile" "$rawgan" bench --device "$device" "${small[@]}" --profile
step bench-"${big[1]}"-"${big[3]}"             90 "$rawgan" bench --device "$device" "${big[@]}"
step bench-8-graphs        30 "$rawgan" bench --device "$device" "${launch[@]}"
step bench-8-graphs-off    30 "$rawgan" bench --device "$device" "${launch[@]}" --graphs off
# The same small step with the fp32 SIMT kernels (versions 1 and 3, by shape), beside the default (TF32 on compute 8.0+).
step bench-"${small[1]}"-"${small[3]}"-fp32    "$l_bench" "$rawgan" bench --device "$device" "${small[@]}" --precision fp32
# The machine code of every kernel from this machine's NVRTC (CUDA 13 on the lent GPUs): about a
# minute of compiling on one core, so after the measurements.
step info-kernels     90 "$rawgan" info --kernels
if [[ -f $lab ]]; then
  step lab-check-smoke  20 "$lab" --check --smoke
  step lab-gpu          90 "$lab" "${lab_gpu[@]}" --artifacts "$logs/lab-gpu-artifacts"
else
  printf '%-26s %4s %8s  %s\n' "lab-*" "-" "-" "skipped: the bundle has no bench/RawGan.Benchmarks" >> "$summary"
fi

total=$(elapsed_ms)
echo "# total $((total / 1000)).$((total % 1000 / 100)) s, $failures step(s) failed or skipped" >> "$summary"
pack
echo "run.sh: results in $out (summary.txt, results.tar.gz)"
cat "$summary"
(( failures == 0 ))
