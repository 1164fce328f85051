// gen_chat.mjs DATA renders the chat templates with Hugging Face's
// @huggingface/jinja and encodes the results with @huggingface/tokenizers,
// writing golden/chat.json. Templates: Llama 3's and Qwen 3's from the fetched
// tokenizer_config.json files, and chat_templates.json (Qwen2/ChatML,
// SmolLM2 and Mistral, written after the models' published templates).
// Run after `fetch.sh --reference DATA`: node tokenizer/testdata/gen_chat.mjs "$DATA"
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const data = path.resolve(process.argv[2]);
const require = createRequire(path.join(data, "node", "package.json"));
const { Template } = require("@huggingface/jinja");
const { Tokenizer } = require("@huggingface/tokenizers");
const here = path.dirname(new URL(import.meta.url).pathname);
const load = (name) => ({
	tj: JSON.parse(fs.readFileSync(path.join(data, name, "tokenizer.json"), "utf8")),
	cfg: JSON.parse(fs.readFileSync(path.join(data, name, "tokenizer_config.json"), "utf8")),
});
const templates = JSON.parse(fs.readFileSync(path.join(here, "chat_templates.json"), "utf8"));
const files = { llama3: load("llama3"), qwen3: load("qwen3") };
templates.llama3 = files.llama3.cfg.chat_template;
templates.qwen3 = files.qwen3.cfg.chat_template;
const sys = { role: "system", content: "You are terse." };
const u1 = { role: "user", content: " Hi there! " };
const a1 = { role: "assistant", content: "Hello. How can I help?" };
const u2 = { role: "user", content: "What's 2+2?\nAnswer in 日本語 😀." };
const think = { role: "assistant", content: "<think>\nadd them\n</think>\n\n4" };
const conversations = [[u1], [sys, u1], [u1, a1, u2], [sys, u1, a1, u2], [u1, think], [u1, think, u2], [sys, u1, a1], [{ role: "user", content: "" }]];
const cases = [];
for (const messages of conversations) {
	for (const add_generation_prompt of [false, true]) {
		const rendered = {};
		const ids = {};
		for (const [name, src] of Object.entries(templates)) {
			try {
				rendered[name] = new Template(src).render({ messages, add_generation_prompt, bos_token: "<s>", eos_token: "</s>" });
			} catch (e) {
				rendered[name] = null; // the template raises (e.g. Mistral's role check)
			}
		}
		for (const name of ["llama3", "qwen3"]) {
			const cfg = files[name].cfg;
			const r = new Template(templates[name]).render({ messages, add_generation_prompt, bos_token: cfg.bos_token ?? "", eos_token: cfg.eos_token ?? "" });
			ids[name] = new Tokenizer(files[name].tj, cfg).encode(r, { add_special_tokens: false }).ids;
		}
		cases.push({ messages, add_generation_prompt, rendered, ids });
	}
}
fs.writeFileSync(path.join(here, "golden", "chat.json"), JSON.stringify({ templates, cases }, null, 0) + "\n");
console.log(cases.length, "cases");
