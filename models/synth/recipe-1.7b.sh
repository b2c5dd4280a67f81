#!/usr/bin/env bash
# A TaH model with the released 1.7B recipe's shapes (Qwen3: hidden 2048, 28 layers,
# 16 heads / 8 KV heads of 128, FFN 6144, vocab 151936; LoRA r 32 on every linear;
# decider hidden_dims 6×512, layer_nums [2,10,18,26], top-k 100), random weights:
# generated in the reference layout, converted (q4_0 linears by default), then
# generated from in each think mode. Prints file size, peak RSS and tokens/s.
# Needs ~4 GB of disk for the f16 checkpoint and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="${1:-${TMPDIR:-/tmp}/tah-recipe-1.7b}"
quant="${QUANT:-q4_0}"
bin="${CARGO_TARGET_DIR:-target}/release"
if [ ! -f "$dir/iter_decider.bin" ]; then
  python3 models/synth/make_tah_checkpoint.py "$dir" --arch qwen3 --hidden 2048 --layers 28 \
    --heads 16 --kv-heads 8 --head-dim 128 --ffn 6144 --vocab 151936 --rank 32 --alpha 64 \
    --decider-layers 2,10,18,26 --decider-dims 512,512,512,512,512,512 --expansion 4 \
    --topk 100 --input-topk 100 --threshold 0.9 --base-dtype float16
fi
out="$dir.$quant.tah"
/usr/bin/time -f "convert: %e s, peak RSS %M KiB" "$bin/tah-convert" "$dir" -o "$out" --quant "$quant" --quiet
ls -l "$out"
report() {
  python3 -c '
import json, sys
g = json.load(sys.stdin)
s = g["stats"]
print("  tokens/s decode %.2f, prefill %.2f, tokens per depth %s, KV bytes per depth %s" % (
    s["decode_tokens_per_s"], s["prefill_tokens_per_s"], s["tokens_per_depth"], s["kv_bytes_per_depth"]))'
}
# Random weights: the decider sends (nearly) every token deeper in auto mode, so
# "hard-rate 0.06" (a fixed random 6% of tokens, the paper's typical share) shows
# what TaH costs at its intended rate.
for think in never auto always "auto --hard-rate 0.06"; do
  # shellcheck disable=SC2086 # $think may carry a second option
  /usr/bin/time -f "$think: peak RSS %M KiB" "$bin/tah" run -m "$out" --prompt-ids 1,2,3,4,5,6,7,8 \
    -n 32 --temp 0 --think $think --json --ctx 256 | report
done
# The cache after a 512-token generation at a 6% hard rate: depth 2 holds only
# the hard tokens (RECIPE_LONG=0 skips it: .ci/run does).
[ "${RECIPE_LONG:-1}" = 1 ] || exit 0
echo "512 tokens, hard-rate 0.06:"
"$bin/tah" run -m "$out" --prompt-ids 1,2,3,4,5,6,7,8 -n 512 --ignore-eos --temp 0 \
  --think auto --hard-rate 0.06 --json --ctx 1024 | report
