#!/usr/bin/env bash
# Builds (when needed) and runs the TorchSharp peer: bash bench/torchsharp/run.sh --resolution 8 --threads 2
#
# TorchSharp 0.107's libLibTorchSharp.so was linked against a newer libstdc++ than Debian 12's: it
# asks for the version GLIBCXX_3.4.32 for one symbol, std::ios_base_library_init(), which GCC 13's
# <iostream> references only to pull in a libstdc++ that has it, and which nothing calls. Debian 12's
# libstdc++ (GCC 12) stops at GLIBCXX_3.4.30, so the library does not load. Nothing on the system is
# changed to fix that: when the system's libstdc++ lacks the version, this script builds (once, with
# g++, into obj/shim/) a stand-in named libstdc++.so.6 that defines every version node of the system's
# libstdc++ plus GLIBCXX_3.4.32 with that one empty function, and preloads it ahead of the real
# libstdc++ (by its full path). The dynamic linker checks version requirements against the first
# object named libstdc++.so.6 (the stand-in, which has them all) and finds every real symbol in the
# real library, which is loaded right after it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dll="$here/bin/Release/net10.0/TorchSharpProGan.dll"
if [ ! -f "$dll" ] || [ -n "$(find "$here" -maxdepth 1 -newer "$dll" \( -name '*.cs' -o -name '*.csproj' \))" ]; then
  dotnet build "$here/TorchSharpProGan.csproj" -c Release -nologo -v quiet >&2
fi

real=$(readlink -f "$(/sbin/ldconfig -p | sed -n 's/.*libstdc++\.so\.6 (libc6,x86-64) => //p' | head -1)")
preload=
if ! grep -qa GLIBCXX_3.4.32 "$real"; then
  shim="$here/obj/shim/libstdc++.so.6"
  if [ ! -f "$shim" ] || [ "$real" -nt "$shim" ]; then
    mkdir -p "$here/obj/shim"
    echo 'namespace std { void ios_base_library_init() {} }' > "$here/obj/shim/shim.cpp"
    # Every version the real library defines (empty nodes), then the missing one with its symbol.
    { objdump -p "$real" | sed -n '/Version definitions/,/Version References/p' \
        | awk '$1 ~ /^[0-9]+$/ && NF >= 4 && $4 !~ /\.so/ { print $4 " { };" }'
      echo 'GLIBCXX_3.4.32 { global: _ZSt21ios_base_library_initv; };'; } > "$here/obj/shim/versions.map"
    g++ -shared -fPIC -O2 -nostdlib -Wl,-soname,libstdc++.so.6 -Wl,--version-script="$here/obj/shim/versions.map" \
      -o "$shim" "$here/obj/shim/shim.cpp"
  fi
  preload="$shim $real"
fi
LD_PRELOAD="$preload${LD_PRELOAD:+ $LD_PRELOAD}" exec dotnet "$dll" "$@"
