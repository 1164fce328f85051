// derive.mjs DATA writes two variants of the fetched files that exercise the
// components the four real files do not use, so they too are checked against
// the reference:
//   llama2-metaspace: llama2 in the newer Metaspace serialization (no
//     normalizer; Metaspace pre-tokenizer with prepend_scheme "first"; Metaspace decoder)
//   llama3-mixed: Llama 3 with NFKC + Replace normalizers and a Sequence of
//     Digits, a Split on a custom regex (the regexp2 path) and the Llama 3 split
import fs from "node:fs";
import path from "node:path";

const data = path.resolve(process.argv[2]);
const read = (name, file) => JSON.parse(fs.readFileSync(path.join(data, name, file), "utf8"));
const write = (name, tj, cfg) => {
	fs.mkdirSync(path.join(data, name), { recursive: true });
	fs.writeFileSync(path.join(data, name, "tokenizer.json"), JSON.stringify(tj));
	fs.writeFileSync(path.join(data, name, "tokenizer_config.json"), JSON.stringify(cfg));
};

const l2 = read("llama2", "tokenizer.json");
l2.normalizer = null;
l2.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
l2.decoder = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
write("llama2-metaspace", l2, read("llama2", "tokenizer_config.json"));

const l3 = read("llama3", "tokenizer.json");
const split = l3.pre_tokenizer.pretokenizers[0];
l3.normalizer = { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Replace", pattern: { String: "\t" }, content: "    " }] };
l3.pre_tokenizer = {
	type: "Sequence",
	pretokenizers: [
		{ type: "Digits", individual_digits: true },
		{ type: "Split", pattern: { Regex: "[A-Z][a-z]+" }, behavior: "Isolated", invert: false },
		split,
		{ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
	],
};
write("llama3-mixed", l3, read("llama3", "tokenizer_config.json"));
