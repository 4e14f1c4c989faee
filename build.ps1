# RawGan build script: a thin wrapper over the same dotnet commands that .ci/run and README.md use.
#   ./build.ps1            build (Release)
#   ./build.ps1 test       the test suite (./test.sh also installs its native libraries on Debian)
#   ./build.ps1 bench      the BenchmarkDotNet kernel comparisons
param([string]$Target = "build")
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
switch ($Target) {
    "build" { dotnet build RawGan.sln -c Release }
    "test"  { dotnet test RawGan.sln -c Release }
    "bench" { dotnet run -c Release --project bench/RawGan.Benchmarks -- --filter '*' }
    default { throw "unknown target '$Target' (build, test, bench)" }
}
exit $LASTEXITCODE
