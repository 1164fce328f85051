// gen_golden.mjs DATA writes golden/<name>.json with the reference's ids for
// every text of corpus.json, for each tokenizer fetched by `fetch.sh
// --reference DATA`. The reference is Hugging Face's JavaScript port,
// @huggingface/tokenizers:
//   ids      encode(text, {add_special_tokens: false}).ids
//   special  encode(text, {add_special_tokens: true}).ids
//   decoded  decode(ids, {clean_up_tokenization_spaces: false}) ("" for no ids)
// Run: node tokenizer/testdata/gen_golden.mjs "$DATA"
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const data = path.resolve(process.argv[2]);
const require = createRequire(path.join(data, "node", "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");
const here = path.dirname(new URL(import.meta.url).pathname);
const corpus = JSON.parse(fs.readFileSync(path.join(here, "corpus.json"), "utf8"));
fs.mkdirSync(path.join(here, "golden"), { recursive: true });

for (const name of ["gpt2", "llama2", "llama3", "qwen3", "llama2-metaspace", "llama3-mixed"]) {
	const dir = path.join(data, name);
	const tj = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
	const cfgPath = path.join(dir, "tokenizer_config.json");
	const cfg = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
	const tok = new Tokenizer(tj, cfg);
	const out = { ids: [], special: [], decoded: [] };
	for (const text of corpus) {
		const ids = tok.encode(text, { add_special_tokens: false }).ids;
		out.ids.push(ids);
		out.special.push(tok.encode(text, { add_special_tokens: true }).ids);
		out.decoded.push(ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : "");
	}
	fs.writeFileSync(path.join(here, "golden", name + ".json"), JSON.stringify(out) + "\n");
	console.log(name, corpus.length, "texts");
}
