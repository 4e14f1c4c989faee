#!/usr/bin/env bash
# Builds a self-contained RawGan bundle for a Linux x64 machine with an NVIDIA GPU and no .NET:
#
#   bash bench/gpu/bundle.sh [OUTDIR]          # default bench/gpu/out/bundle, and OUTDIR.tar.gz beside it
#
#   OUTDIR/rawgan                      the CLI (src/Trainer): single file, self-contained, trimmed
#   OUTDIR/libSkiaSharp.so             SkiaSharp's native library, beside it: the CLI reads and
#                                      writes image files with it (loaded on the first image)
#   OUTDIR/bench/RawGan.Benchmarks     the kernel lab (bench/RawGan.Benchmarks) the same way, for
#                                      its GPU comparisons with cuBLAS (left out with NO_BENCH=1)
#   OUTDIR/run.sh                      bench/gpu/run.sh: every GPU check and benchmark, results in one folder
#   OUTDIR/BUNDLE.txt                  commit, date and what was built
#
# Trimming is TrimMode=partial: only the .NET framework's own assemblies are trimmed, RawGan's
# and its packages' assemblies are kept whole, so System.Text.Json's reflection over the
# checkpoint and report types and BenchmarkDotNet's reflection over the benchmark classes keep
# working (JsonSerializerIsReflectionEnabledByDefault=true turns that reflection back on; the
# trim analyzer is off, its warnings would be errors under TreatWarningsAsErrors). The single
# files are compressed. Each binary is run here once before the bundle is packed (NO_TEST=1
# skips that): info, a CPU bench, a short training run with a checkpoint read back by generate,
# and the kernel lab's --check --smoke.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/out/bundle}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
build=$here/out/build   # bin/ and obj/ of the publish, apart from the developer's own
started=$SECONDS

common=(-c Release -r linux-x64 --self-contained -nologo -v quiet
  --artifacts-path "$build"
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true
  -p:PublishTrimmed=true -p:TrimMode=partial
  -p:JsonSerializerIsReflectionEnabledByDefault=true
  -p:EnableTrimAnalyzer=false -p:SuppressTrimAnalysisWarnings=true
  -p:InvariantGlobalization=true -p:SatelliteResourceLanguages=en
  -p:DebugType=none -p:GenerateDocumentationFile=false)

rm -rf "$out" "$out.tar.gz"
mkdir -p "$out"
echo "bundle: publishing src/Trainer -> $out/rawgan"
dotnet publish "$root/src/Trainer" "${common[@]}" -o "$out"
if [[ "${NO_BENCH:-0}" != 1 ]]; then
  echo "bundle: publishing bench/RawGan.Benchmarks -> $out/bench/RawGan.Benchmarks"
  dotnet publish "$root/bench/RawGan.Benchmarks" "${common[@]}" -o "$out/bench"
  # BenchmarkDotNet's disassembler brings Capstone (ARM disassembly, 6.7 MiB) and TraceEvent
  # brings Windows DLLs (amd64/); neither is used on Linux x64, and the program starts without them.
  # The lab reads and writes no image, so SkiaSharp's native library (12 MiB) is left out too.
  rm -rf "$out/bench/libcapstone.so" "$out/bench/amd64" "$out/bench/x86" "$out/bench/arm64" "$out/bench/libSkiaSharp.so"
fi
cp "$here/run.sh" "$out/run.sh"
chmod +x "$out/run.sh" "$out/rawgan"
{
  echo "RawGan GPU bundle"
  echo "commit:  $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built:   $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), dotnet $(dotnet --version)"
  echo "publish: linux-x64, self-contained, single file (compressed), trimmed (TrimMode=partial), invariant globalization"
  echo "files:"
  (cd "$out" && find . -type f ! -name BUNDLE.txt | sort | while read -r f; do printf '  %-32s %s\n' "${f#./}" "$(du -h "$f" | cut -f1)"; done)
} > "$out/BUNDLE.txt"

if [[ "${NO_TEST:-0}" != 1 ]]; then
  echo "bundle: testing the published binaries on this machine's CPU"
  t=$(mktemp -d)
  trap 'rm -rf "$t"' EXIT
  (
    cd "$t"
    export RAWGAN_CACHE_DIR=$t/cache
    "$out/rawgan" info > info.txt
    "$out/rawgan" bench --device cpu --resolution 8 --preset tiny --iterations 1 --warmup 1 > bench.txt
    grep -q '^ms_per_iter=' bench.txt
    "$out/rawgan" train --kimg-per-phase 0.05 --resolution 8 --preset tiny --device cpu --out "$t/run" \
      --shapes-count 500 --swd-images 64 > train.txt
    run=$(ls -d "$t"/run/*/)
    test -s "$run/config.json" && ls "$run"/checkpoints/*/state.json > /dev/null
    "$out/rawgan" generate --checkpoint "$run" --count 4 --device cpu --out "$t/grid.png" > generate.txt
    test -s "$t/grid.png"
    # The grid, read back as training data: image files through the native library beside rawgan.
    mkdir "$t/images" && cp "$t/grid.png" "$t/images/"
    "$out/rawgan" train --data "$t/images" --kimg-per-phase 0.02 --resolution 8 --preset tiny --device cpu \
      --out "$t/run-images" --swd-images 0 > train-images.txt
    grep -q '^data: .*, 1 images, 3 channel' train-images.txt
    if [[ -x "$out/bench/RawGan.Benchmarks" ]]; then
      "$out/bench/RawGan.Benchmarks" --check --smoke > check.txt
    fi
  ) || { echo "bundle: a published binary failed its test (logs in $t)" >&2; trap - EXIT; exit 1; }
  echo "bundle: ok: info, bench (cpu), train + generate from its checkpoint, train on the generated PNG$([[ -x "$out/bench/RawGan.Benchmarks" ]] && echo ', kernel lab --check --smoke')"
fi

tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
echo "bundle: done in $((SECONDS - started)) s"
cat "$out/BUNDLE.txt"
du -sh "$out" "$out.tar.gz"
