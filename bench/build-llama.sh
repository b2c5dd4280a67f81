#!/usr/bin/env bash
# Build llama.cpp's command-line tools (the referee for tah's speed and accuracy)
# into a cache directory outside the repository.
#
#   bench/build-llama.sh [noamx] [amx]      # default: noamx
#
# Result: $LLAMA_CACHE/<variant>/bin/{llama-bench,llama-perplexity,llama-quantize,
#         llama-tokenize,llama-simple}   (LLAMA_CACHE defaults to ~/.cache/tah/llama.cpp)
# Idempotent: a variant whose binaries all exist is skipped (FORCE=1 rebuilds).
#
# Sources (the same pair the anchors in ../shared/anchors were measured with):
#   * library (ggml 0.26.0, libllama, common/): the vendored llama.cpp inside the
#     crates.io crate llama-cpp-sys-2 $CRATE_VER. Taken from ~/.cargo/registry when
#     present, else fetched with `cargo fetch` in a scratch project.
#   * tools' sources (tools/{llama-bench,perplexity,quantize,tokenize}, examples/simple):
#     the PyPI sdist llama-cpp-python $PY_VER (vendor/llama.cpp), via `pip download`;
#     the crate ships only their READMEs.
#   The two are assembled into $LLAMA_CACHE/src, with a minimal tools/CMakeLists.txt that
#   adds only the tools we build.
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
#
# Environment: LLAMA_CACHE, JOBS (default 2), NICE (default 10), FORCE=1,
#              CRATE_VER, PY_VER.
set -euo pipefail

CRATE_VER=${CRATE_VER:-0.1.161}
PY_VER=${PY_VER:-0.3.36}
LLAMA_CACHE=${LLAMA_CACHE:-$HOME/.cache/tah/llama.cpp}
JOBS=${JOBS:-2}
NICE=${NICE:-10}
TOOLS=(llama-bench llama-perplexity llama-quantize llama-tokenize llama-simple)

if [ $# -eq 0 ]; then set -- noamx; fi
for v in "$@"; do
  case $v in noamx|amx) ;; *) echo "unknown variant '$v' (noamx|amx)" >&2; exit 2 ;; esac
done

log() { echo "[build-llama] $*" >&2; }

have_all() {  # have_all BIN_DIR
  local t
  for t in "${TOOLS[@]}"; do [ -x "$1/$t" ] || return 1; done
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

prepare_src() {
  if [ -f "$SRC/.tah-prepared" ]; then return; fi
  mkdir -p "$DL"
  local crate sdist vend t
  crate=$(crate_dir)
  sdist=$DL/llama_cpp_python-$PY_VER.tar.gz
  if [ ! -f "$sdist" ]; then
    log "downloading the llama-cpp-python $PY_VER sdist with pip"
    # Its metadata step needs scikit-build-core and cmake: installed from their
    # wheels here, as pip's isolated build env would build cmake from source.
    python3 -m pip install --quiet scikit-build-core cmake >&2
    python3 -m pip download --no-deps --no-binary :all: --no-build-isolation \
      "llama-cpp-python==$PY_VER" -d "$DL" >&2
  fi
  rm -rf "$SRC" "$DL/sdist"
  mkdir -p "$DL/sdist" "$(dirname "$SRC")"
  vend=llama_cpp_python-$PY_VER/vendor/llama.cpp
  tar xzf "$sdist" -C "$DL/sdist" "$vend/tools" "$vend/examples/simple"
  log "assembling $SRC (library from the crate, tools from the sdist)"
  cp -a "$crate/llama.cpp" "$SRC"
  for t in llama-bench perplexity quantize tokenize; do
    rm -rf "$SRC/tools/$t"
    cp -a "$DL/sdist/$vend/tools/$t" "$SRC/tools/$t"
  done
  rm -rf "$SRC/tools/simple"
  cp -a "$DL/sdist/$vend/examples/simple" "$SRC/tools/simple"
  cat > "$SRC/tools/CMakeLists.txt" <<'EOF'
# Written by tah's bench/build-llama.sh: only the tools tah is measured against.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
add_subdirectory(perplexity)
add_subdirectory(quantize)
add_subdirectory(tokenize)
add_subdirectory(simple)
EOF
  echo "crate llama-cpp-sys-2 $CRATE_VER ($crate) + sdist llama-cpp-python $PY_VER tools" > "$SRC/.tah-prepared"
}

# ---------------------------------------------------------------- build
build_variant() {
  local v=$1 vdir=$LLAMA_CACHE/$1
  local bin=$vdir/bin
  if [ "${FORCE:-0}" != 1 ] && have_all "$bin"; then
    log "$v: binaries present in $bin, skipping"
    return
  fi
  prepare_src
  local vsrc=$vdir/src bld=$vdir/build
  mkdir -p "$vdir"
  # An interrupted build is resumed (make is incremental); FORCE=1 starts afresh.
  if [ "${FORCE:-0}" = 1 ] || [ ! -f "$vsrc/.tah-prepared" ]; then
    rm -rf "$vsrc" "$bld"
    cp -a "$SRC" "$vsrc"
  else
    log "$v: resuming in $bld"
  fi
  local flags=(
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
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
  esac
  log "$v: configuring"
  local t0 t1 t2
  t0=$(date +%s)
  nice -n "$NICE" cmake -S "$vsrc" -B "$bld" "${flags[@]}" > "$vdir/cmake-configure.log" 2>&1 \
    || { tail -n 30 "$vdir/cmake-configure.log" >&2; exit 1; }
  t1=$(date +%s)
  log "$v: building ${TOOLS[*]} with -j$JOBS (log: $vdir/cmake-build.log)"
  nice -n "$NICE" cmake --build "$bld" --config Release -j"$JOBS" --target "${TOOLS[@]}" \
    > "$vdir/cmake-build.log" 2>&1 || { tail -n 40 "$vdir/cmake-build.log" >&2; exit 1; }
  t2=$(date +%s)
  mkdir -p "$bin"
  for t in "${TOOLS[@]}"; do cp "$bld/bin/$t" "$bin/$t"; done
  {
    echo "variant: $v"
    echo "sources: $(cat "$SRC/.tah-prepared")"
    echo "cmake flags: ${flags[*]}"
    echo "configure: $((t1 - t0)) s; build (-j$JOBS, nice $NICE, shared machine, this run): $((t2 - t1)) s"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(gcc --version | head -n1)"
  } > "$vdir/BUILD-INFO.txt"
  log "$v: done in $((t2 - t0)) s -> $bin"
  cat "$vdir/BUILD-INFO.txt" >&2
  if [ "${KEEP_BUILD:-0}" != 1 ]; then rm -rf "$bld" "$vsrc"; fi
}

for v in "$@"; do build_variant "$v"; done
