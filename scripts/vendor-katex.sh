#!/usr/bin/env bash
# Vendors KaTeX (math typesetting for the `tah serve` tutor page) into
# src/bin/tah/serve/page/katex/: katex.min.js, katex.min.css, fonts/*.woff2 and
# the MIT LICENSE, from the npm package at a pinned version whose tarball must
# match a pinned sha512 (the registry's dist.integrity for that version).
# Only woff2 fonts are kept: every browser the page targets reads woff2 first,
# and katex.min.css names fonts by relative URL (fonts/...), which resolves
# under /assets/katex/ on the server.
#
#   scripts/vendor-katex.sh
#
# Needs npm (it is run as `npm pack`, nothing is installed) and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ver=0.19.1
integrity='sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA=='
dest=$root/src/bin/tah/serve/page/katex

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "katex@$ver" >/dev/null)
tgz=$tmp/katex-$ver.tgz
got=sha512-$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")
if [ "$got" != "$integrity" ]; then
  echo "vendor-katex: katex-$ver.tgz has integrity $got, expected $integrity" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$tmp"
rm -rf "$dest"
mkdir -p "$dest/fonts"
cp "$tmp/package/LICENSE" "$tmp/package/dist/katex.min.js" "$tmp/package/dist/katex.min.css" "$dest/"
cp "$tmp"/package/dist/fonts/*.woff2 "$dest/fonts/"
echo "vendor-katex: katex $ver -> ${dest#"$root"/} ($(du -sk "$dest" | cut -f1) KiB)"
