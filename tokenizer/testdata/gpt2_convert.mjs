// gpt2_convert.mjs SRC DST writes DST/tokenizer.json (and a small
// tokenizer_config.json) for GPT-2 from OpenAI's encoder.json and vocab.bpe
// in SRC, in the layout Hugging Face's openai-community/gpt2 uses: byte-level
// BPE, GPT-2's regex, <|endoftext|> as added token 50256.
import fs from "node:fs";
import path from "node:path";

const [src, dst] = process.argv.slice(2);
const vocab = JSON.parse(fs.readFileSync(path.join(src, "encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(src, "vocab.bpe"), "utf8")
	.split("\n").slice(1).filter((l) => l.length > 0);
const eot = "<|endoftext|>";
const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
const tok = {
	version: "1.0",
	truncation: null,
	padding: null,
	added_tokens: [{ id: vocab[eot], content: eot, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
	normalizer: null,
	pre_tokenizer: { type: "ByteLevel", ...byteLevel },
	post_processor: { type: "ByteLevel", ...byteLevel },
	decoder: { type: "ByteLevel", ...byteLevel },
	model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges },
};
fs.writeFileSync(path.join(dst, "tokenizer.json"), JSON.stringify(tok));
fs.writeFileSync(path.join(dst, "tokenizer_config.json"), JSON.stringify({
	bos_token: eot, eos_token: eot, unk_token: eot, add_prefix_space: false, clean_up_tokenization_spaces: false, model_max_length: 1024, tokenizer_class: "GPT2Tokenizer",
}));
