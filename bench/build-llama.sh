#!/usr/bin/env bash
# Build llama.cpp's command-line tools (the referee for tah's speed and accuracy)
# into a cache directory outside the repository.
#
#   bench/build-llama.sh [noamx] [amx] [native]   # default: the host's (see below)
#
# Result: $LLAMA_CACHE/<variant>/bin/{llama-bench,llama-perplexity,llama-quantize,
#         llama-tokenize,llama-simple,llama-server}   (LLAMA_CACHE defaults to ~/.cache/tah/llama.cpp)
# Idempotent: each binary is checked on its own; only the missing ones are built and
# copied (binaries already there are left as they are). FORCE=1 rebuilds all of them.
#
# Sources (the same pair the anchors in ../shared/anchors were measured with):
#   * library (ggml 0.26.0, libllama, common/): the vendored llama.cpp inside the
#     crates.io crate llama-cpp-sys-2 $CRATE_VER. Taken from ~/.cargo/registry when
#     present, else fetched with `cargo fetch` in a scratch project.
#   * tools' sources (tools/{llama-bench,perplexity,quantize,tokenize}, examples/simple):
#     the PyPI sdist llama-cpp-python $PY_VER (vendor/llama.cpp), via `pip download`;
#     the crate ships only their READMEs.
#   * llama-server (for comparing `tah serve` with `llama-server -np N`): tools/server
#     from the same sdist, compiled against the crate's library, its tools/mtmd and its
#     vendor/cpp-httplib (the crate has the HTTP library but not the server's sources).
#     No web UI: the sdist's tools/ui/{CMakeLists.txt,ui.h.in,ui.cpp.in} and
#     scripts/ui-assets.cmake are copied, and with -DLLAMA_BUILD_UI=OFF (no npm build)
#     and -DLLAMA_USE_PREBUILT_UI=OFF (no download) llama.cpp's own ui-assets.cmake
#     writes an empty asset table (ui.cpp/ui.h without LLAMA_UI_HAS_ASSETS): the API
#     works, "/" serves no page.
#     The sdist's server and the crate's common/ and mtmd differ in two calls; the
#     variant's private copy of tools/server is patched with sed (patch_server_src):
#     mtmd_get_memory_usage returns a struct here (the per-device map is its
#     .backend_mem_usage; used only with --mmproj and --fit), and common/ has no
#     fs_open_ifstream (the MCP config file is opened with std::ifstream, the same on
#     Linux).
#   The two are assembled into $LLAMA_CACHE/src, with a minimal tools/CMakeLists.txt that
#   adds only the tools we build. A source tree assembled before llama-server was added
#   gets the server's sources added in place (marker .tah-server).
#
# Variants:
#   noamx  -DGGML_NATIVE=OFF, AVX/AVX2/FMA/F16C/AVX-512(F,VNNI,BF16) on, AMX off:
#          llama.cpp's AVX-512 path, the one tah's goals are set against.
#   amx    the default native build (-march=native, AMX-INT8 on this CPU). GCC 12
#          miscompiles ggml's `_tile_loadconfig(&tc)` (the intrinsic's operand is
#          declared 8 bytes wide, so the stores that fill the 64-byte tile config are
#          dropped and every AMX matmul dies with SIGILL). This script patches the
#          variant's private copy of ggml-cpu/amx/mmq.cpp with sed, replacing that call
#          by an inline `ldtilecfg` whose memory operand is the whole struct.
#          The cargo registry and the downloaded sdist are never modified.
#   native the host's own instruction sets: on x86 each of SSE4.2, AVX, AVX2, BMI2,
#          FMA, F16C, AVX-VNNI, AVX-512 F/VBMI/VNNI/BF16 on exactly when /proc/cpuinfo
#          lists it (AMX off), on aarch64 -DGGML_NATIVE=ON (-mcpu=native: NEON,
#          dotprod, i8mm as the CPU has them). For an AVX2-only x86 host (noamx
#          forces AVX-512 and cannot run there) or an aarch64 Linux host such as a
#          Raspberry Pi.
#   Default: noamx on an x86 host with AVX-512 F and VNNI (the goals' referee),
#   native everywhere else. `bench/build-llama.sh default-variant` prints it.
#
# Environment: LLAMA_CACHE, JOBS (default 2), NICE (default 10), FORCE=1,
#              CRATE_VER, PY_VER.
set -euo pipefail

CRATE_VER=${CRATE_VER:-0.1.161}
PY_VER=${PY_VER:-0.3.36}
LLAMA_CACHE=${LLAMA_CACHE:-$HOME/.cache/tah/llama.cpp}
JOBS=${JOBS:-2}
NICE=${NICE:-10}
TOOLS=(llama-bench llama-perplexity llama-quantize llama-tokenize llama-simple llama-server)

default_variant() {  # noamx where llama.cpp's AVX-512 path runs, else native
  if [ "$(uname -m)" = x86_64 ] && grep -qw avx512f /proc/cpuinfo && grep -qw avx512_vnni /proc/cpuinfo; then
    echo noamx
  else
    echo native
  fi
}
if [ "${1:-}" = default-variant ]; then default_variant; exit 0; fi
if [ $# -eq 0 ]; then set -- "$(default_variant)"; fi
for v in "$@"; do
  case $v in noamx|amx|native) ;; *) echo "unknown variant '$v' (noamx|amx|native)" >&2; exit 2 ;; esac
done

log() { echo "[build-llama] $*" >&2; }

missing_tools() {  # missing_tools BIN_DIR: prints the tools not yet in BIN_DIR
  local t
  for t in "${TOOLS[@]}"; do [ -x "$1/$t" ] || echo "$t"; done
}

# ---------------------------------------------------------------- sources
DL=$LLAMA_CACHE/dl
SRC=$LLAMA_CACHE/src/llama.cpp-sys2-$CRATE_VER+py-$PY_VER

crate_dir() {  # prints the unpacked crate directory, fetching it if needed
  local d f
  d=$(ls -d "$HOME"/.cargo/registry/src/*/llama-cpp-sys-2-"$CRATE_VER" 2>/dev/null | head -n1 || true)
  if [ -n "$d" ] && [ -f "$d/llama.cpp/CMakeLists.txt" ]; then echo "$d"; return; fi
  f=$(ls "$HOME"/.cargo/registry/cache/*/llama-cpp-sys-2-"$CRATE_VER".crate 2>/dev/null | head -n1 || true)
  if [ -z "$f" ]; then
    log "fetching crate llama-cpp-sys-2 $CRATE_VER with cargo fetch (scratch project)"
    local p=$DL/cargo-fetch
    mkdir -p "$p/src"
    printf '[package]\nname = "llama-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nllama-cpp-sys-2 = "=%s"\n' \
      "$CRATE_VER" > "$p/Cargo.toml"
    echo 'fn main() {}' > "$p/src/main.rs"
    (cd "$p" && cargo fetch >&2)
    f=$(ls "$HOME"/.cargo/registry/cache/*/llama-cpp-sys-2-"$CRATE_VER".crate | head -n1)
  fi
  mkdir -p "$DL/crate"
  tar xzf "$f" -C "$DL/crate"
  echo "$DL/crate/llama-cpp-sys-2-$CRATE_VER"
}

VEND=llama_cpp_python-$PY_VER/vendor/llama.cpp   # the llama.cpp inside the sdist

sdist_file() {  # prints the sdist's path, downloading it if needed
  local sdist=$DL/llama_cpp_python-$PY_VER.tar.gz
  mkdir -p "$DL"
  if [ ! -f "$sdist" ]; then
    log "downloading the llama-cpp-python $PY_VER sdist with pip"
    # Its metadata step needs scikit-build-core and cmake: installed from their
    # wheels here, as pip's isolated build env would build cmake from source.
    python3 -m pip install --quiet scikit-build-core cmake >&2
    python3 -m pip download --no-deps --no-binary :all: --no-build-isolation \
      "llama-cpp-python==$PY_VER" -d "$DL" >&2
  fi
  echo "$sdist"
}

write_tools_cmake() {
  cat > "$SRC/tools/CMakeLists.txt" <<'EOF'
# Written by tah's bench/build-llama.sh: only the tools tah is measured against.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
add_subdirectory(perplexity)
add_subdirectory(quantize)
add_subdirectory(tokenize)
add_subdirectory(simple)
if (LLAMA_BUILD_SERVER)
    # llama-server: mtmd (the crate's) is linked by the server; ui/ yields an empty
    # asset table when LLAMA_BUILD_UI and LLAMA_USE_PREBUILT_UI are OFF.
    add_subdirectory(mtmd)
    add_subdirectory(ui)
    add_subdirectory(server)
endif()
EOF
}

add_server_src() {  # adds llama-server's sources to $SRC (also to a tree assembled earlier)
  if [ -f "$SRC/.tah-server" ]; then return; fi
  local sdist u=$DL/sdist/$VEND
  if [ ! -f "$u/tools/server/main.cpp" ] || [ ! -f "$u/tools/ui/ui.cpp.in" ] \
     || [ ! -f "$u/scripts/ui-assets.cmake" ]; then
    sdist=$(sdist_file)
    mkdir -p "$DL/sdist"
    tar xzf "$sdist" -C "$DL/sdist" "$VEND/tools/server" "$VEND/tools/ui" "$VEND/scripts/ui-assets.cmake"
  fi
  [ -f "$SRC/vendor/cpp-httplib/httplib.h" ] && [ -f "$SRC/tools/mtmd/CMakeLists.txt" ] \
    || { log "$SRC: vendor/cpp-httplib or tools/mtmd missing (expected from the crate)"; exit 1; }
  log "adding llama-server's sources to $SRC (tools/server from the sdist, no web UI)"
  rm -rf "$SRC/tools/server" "$SRC/tools/ui"
  cp -a "$u/tools/server" "$SRC/tools/server"
  mkdir -p "$SRC/tools/ui" "$SRC/scripts"
  cp -a "$u/tools/ui/CMakeLists.txt" "$u/tools/ui/ui.h.in" "$u/tools/ui/ui.cpp.in" "$SRC/tools/ui/"
  cp -a "$u/scripts/ui-assets.cmake" "$SRC/scripts/"
  write_tools_cmake
  echo "llama-server: tools/server, tools/ui templates, scripts/ui-assets.cmake from sdist llama-cpp-python $PY_VER; cpp-httplib and mtmd from the crate; no web UI" \
    > "$SRC/.tah-server"
}

patch_server_src() {  # patch_server_src VSRC: fit the sdist's server to the crate's API (idempotent)
  local d=$1/tools/server
  grep -q 'mparams).backend_mem_usage;' "$d/server-context.cpp" \
    || sed -i 's|mtmd_get_memory_usage(mmproj_path.c_str(), mparams);|mtmd_get_memory_usage(mmproj_path.c_str(), mparams).backend_mem_usage; /* tah: crate mtmd returns a struct */|' "$d/server-context.cpp"
  grep -q 'std::ifstream f(params.mcp_servers_config' "$d/server-mcp.cpp" \
    || sed -i 's|std::ifstream f = fs_open_ifstream(params.mcp_servers_config, std::ios::in);|std::ifstream f(params.mcp_servers_config, std::ios::in); /* tah: crate common has no fs_open_ifstream */|' "$d/server-mcp.cpp"
  grep -q 'mparams).backend_mem_usage;' "$d/server-context.cpp" \
    && grep -q 'std::ifstream f(params.mcp_servers_config' "$d/server-mcp.cpp" \
    || { log "patching $d failed: the server's sources are not the expected ones"; exit 1; }
}

prepare_src() {
  if [ -f "$SRC/.tah-prepared" ]; then add_server_src; return; fi
  local crate sdist t
  crate=$(crate_dir)
  sdist=$(sdist_file)
  rm -rf "$SRC" "$DL/sdist"
  mkdir -p "$DL/sdist" "$(dirname "$SRC")"
  tar xzf "$sdist" -C "$DL/sdist" "$VEND/tools" "$VEND/examples/simple" "$VEND/scripts/ui-assets.cmake"
  log "assembling $SRC (library from the crate, tools from the sdist)"
  cp -a "$crate/llama.cpp" "$SRC"
  for t in llama-bench perplexity quantize tokenize; do
    rm -rf "$SRC/tools/$t"
    cp -a "$DL/sdist/$VEND/tools/$t" "$SRC/tools/$t"
  done
  rm -rf "$SRC/tools/simple"
  cp -a "$DL/sdist/$VEND/examples/simple" "$SRC/tools/simple"
  write_tools_cmake
  echo "crate llama-cpp-sys-2 $CRATE_VER ($crate) + sdist llama-cpp-python $PY_VER tools" > "$SRC/.tah-prepared"
  add_server_src
}

# ---------------------------------------------------------------- build
build_variant() {
  local v=$1 vdir=$LLAMA_CACHE/$1
  local bin=$vdir/bin targets
  if [ "${FORCE:-0}" = 1 ]; then
    targets=("${TOOLS[@]}")
  else
    mapfile -t targets < <(missing_tools "$bin")
    if [ ${#targets[@]} -eq 0 ]; then
      log "$v: binaries present in $bin, skipping"
      return
    fi
  fi
  prepare_src
  local vsrc=$vdir/src bld=$vdir/build
  mkdir -p "$vdir"
  # An interrupted build is resumed (make is incremental); FORCE=1 starts afresh.
  if [ "${FORCE:-0}" = 1 ] || [ ! -f "$vsrc/.tah-prepared" ] || [ ! -f "$vsrc/.tah-server" ]; then
    rm -rf "$vsrc" "$bld"
    cp -a "$SRC" "$vsrc"
  else
    log "$v: resuming in $bld"
  fi
  patch_server_src "$vsrc"
  local flags=(
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=ON
  )
  case $v in
    noamx)
      flags+=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
              -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
              -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF) ;;
    amx)
      flags+=(-DGGML_NATIVE=ON)
      local mmq=$vsrc/ggml/src/ggml-cpu/amx/mmq.cpp
      # GCC 12 AMX fix: load the tile config with an asm whose "m" operand is the whole
      # 64-byte struct, so the compiler keeps the stores that fill it.
      grep -q 'ldtilecfg %0' "$mmq" || sed -i 's|_tile_loadconfig(&tc);|asm volatile("ldtilecfg %0" :: "m"(tc)); /* tah: GCC 12 _tile_loadconfig miscompile */|' "$mmq"
      grep -q 'ldtilecfg %0' "$mmq" || { log "amx: _tile_loadconfig call not found in $mmq"; exit 1; }
      log "amx: patched $mmq (inline ldtilecfg)" ;;
    native)
      if [ "$(uname -m)" = x86_64 ]; then
        # The host's own instruction sets, named one by one from /proc/cpuinfo
        # (GGML_NATIVE's -march=native would also switch on AMX where the CPU has
        # it, which GCC 12 miscompiles: see amx).
        flags+=(-DGGML_NATIVE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF)
        local pair cpu_flags
        cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo)
        for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 bmi2:BMI2 fma:FMA f16c:F16C avx_vnni:AVX_VNNI \
                    avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
          if grep -qw "${pair%%:*}" <<<"$cpu_flags"; then flags+=("-DGGML_${pair#*:}=ON")
          else flags+=("-DGGML_${pair#*:}=OFF"); fi
        done
      else
        flags+=(-DGGML_NATIVE=ON)   # -mcpu=native: NEON, dotprod, i8mm as the CPU has them
      fi ;;
  esac
  log "$v: configuring"
  local t0 t1 t2
  t0=$(date +%s)
  nice -n "$NICE" cmake -S "$vsrc" -B "$bld" "${flags[@]}" > "$vdir/cmake-configure.log" 2>&1 \
    || { tail -n 30 "$vdir/cmake-configure.log" >&2; exit 1; }
  t1=$(date +%s)
  log "$v: building ${targets[*]} with -j$JOBS (log: $vdir/cmake-build.log)"
  nice -n "$NICE" cmake --build "$bld" --config Release -j"$JOBS" --target "${targets[@]}" \
    > "$vdir/cmake-build.log" 2>&1 || { tail -n 40 "$vdir/cmake-build.log" >&2; exit 1; }
  t2=$(date +%s)
  mkdir -p "$bin"
  for t in "${targets[@]}"; do cp "$bld/bin/$t" "$bin/$t"; done
  # A build of all the tools rewrites BUILD-INFO.txt; one that added missing tools to
  # an existing bin/ appends its own record below the earlier one(s).
  local append=0
  [ ${#targets[@]} -eq ${#TOOLS[@]} ] || [ ! -f "$vdir/BUILD-INFO.txt" ] || append=1
  {
    [ $append = 0 ] || echo
    echo "variant: $v"
    echo "targets: ${targets[*]}"
    echo "sources: $(cat "$SRC/.tah-prepared")"
    echo "  $(cat "$SRC/.tah-server")"
    echo "cmake flags: ${flags[*]}"
    echo "configure: $((t1 - t0)) s; build (-j$JOBS, nice $NICE, shared machine, this run): $((t2 - t1)) s"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(gcc --version | head -n1)"
  } > "$vdir/BUILD-INFO.new"
  if [ $append = 1 ]; then cat "$vdir/BUILD-INFO.new" >> "$vdir/BUILD-INFO.txt"; rm -f "$vdir/BUILD-INFO.new"
  else mv "$vdir/BUILD-INFO.new" "$vdir/BUILD-INFO.txt"; fi
  log "$v: done in $((t2 - t0)) s -> $bin"
  cat "$vdir/BUILD-INFO.txt" >&2
  if [ "${KEEP_BUILD:-0}" != 1 ]; then rm -rf "$bld" "$vsrc"; fi
}

for v in "$@"; do build_variant "$v"; done
