// corpus.mjs writes corpus.json: the texts the parity tests encode. They cover
// source code, prose in many scripts, emoji (ZWJ sequences, flags, skin
// tones), combining marks, runs of spaces/tabs/newlines with \r\n, digits,
// special-token strings inside text, contractions, the empty string and very
// long words. Deterministic: rerunning writes the same file.
import fs from "node:fs";

const t = [];
const add = (...xs) => t.push(...xs);

// Empty and tiny.
add("", " ", "  ", "\n", "\t", "\r\n", "a", "A", "1", "!", "é", "日", "👍", "'", "'s", " 's", "\u00a0", "\ufeff", "\u0085", "\u3000");
// English prose and contractions.
add(
	"Hello world",
	"Hello, world! How are you doing today?",
	"The quick brown fox jumps over the lazy dog.",
	"I'm sure you'll see it's what they'd've wanted, isn't it? We're here, you've seen.",
	"I'M SURE YOU'LL SEE IT'S WHAT THEY'D WANTED. WE'RE HERE, YOU'VE SEEN, I'D SAY.",
	"Don't stop: 'quoted' text, \"double quotes\", and `backticks`.",
	"rock'n'roll o'clock ma'am y'all 'twas",
	"It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
	"Mr. Smith (aged 42) paid $3.50 for 2 apples & 3 oranges — a 15% discount… or so he said.",
	"e-mail: someone@example.com, URL: https://example.org/path?q=1&r=two#frag",
	"  leading spaces", "trailing spaces   ", "   both   ", "multiple     internal      spaces",
	"tabs\tbetween\t\twords", "\t\tindented with tabs", "mixed \t \t whitespace",
	"line one\nline two\nline three", "windows\r\nline\r\nendings\r\n", "blank lines\n\n\nbetween\n\n",
	"\n\nleading newlines", "trailing newlines\n\n\n", "spaces before newline   \n  and after",
	"\r\n\r\n", " \n \n ", "a\u00a0b\u00a0\u00a0c", "zero\u200bwidth\u200bspace", "en\u2002space em\u2003space", "ideographic\u3000space",
	"nbsp at end\u00a0", "\u00a0leading nbsp", "line\u2028separator", "para\u2029separator", "bom\ufeffinside", "nel\u0085inside",
);
// Numbers and digits.
add(
	"123", "1234567890", "3.14159265358979", "1,000,000", "-42", "+7 (555) 123-4567", "2026-12-03T11:39:43Z",
	"0x1F 0b1010 0o777 1e-9 6.022e23", "Version 1.2.3-beta.4+build.567", "٠١٢٣٤٥٦٧٨٩ Arabic-Indic digits", "१२३ Devanagari digits",
	"½ ¾ ² ³ Ⅻ ⑦ numbers of other kinds", "12abc34def", "abc123def456", "１２３ full-width digits",
);
// Source code.
add(
	`package main

import "fmt"

func main() {
	for i := 0; i < 10; i++ {
		fmt.Printf("%d: %s\\n", i, "hello")
	}
}
`,
	"def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
	"#include <stdio.h>\nint main(void) {\n\tprintf(\"Hello, %s!\\n\", \"world\");\n\treturn 0;\n}\n",
	"const f = (x) => x ** 2; // square\nconsole.log([1, 2, 3].map(f).join(', '));",
	"SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
	"<html><body><div class=\"main\">Text &amp; more</div></body></html>",
	"{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
	"fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0; 16];\n    Ok(())\n}",
	"x=1;y=2;z=x+y*3/4-5%6**7//8",
	"if (a != b && c <= d || !e) { return a->b[c]; }",
	"    def method(self):\n        pass\n\n\n\nclass Foo:\n\tpass",
	"#!/bin/bash\nfor f in *.txt; do echo \"$f\"; done | sort -u > out.log 2>&1",
	"$$ \\int_0^\\infty e^{-x^2} dx = \\frac{\\sqrt{\\pi}}{2} $$",
	"// TODO(user): fix this!!!\n/* multi\n   line */",
	"a  =  b\t\t+\tc   \n\n\n\t\t\treturn",
	"    ", "\t\t\t\t", "\n\n\n\n", "  \t  \n  \t  ",
);
// Many scripts.
add(
	"안녕하세요, 세계! 오늘 날씨가 정말 좋네요.",
	"한국어 문장과 English가 섞인 text입니다.",
	"你好，世界！今天天气很好。我们去公园散步吧。",
	"机器学习是人工智能的一个分支。",
	"こんにちは、世界！今日はいい天気ですね。カタカナとひらがなと漢字。",
	"東京都渋谷区で、ラーメンを食べました。",
	"Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
	"Украї́нська мова та беларуская мова.",
	"Γειά σου Κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
	"مرحبا بالعالم! كيف حالك اليوم؟",
	"العربية: النص من اليمين إلى اليسار 123 مع أرقام.",
	"שלום עולם! עברית עם ניקוד: שָׁלוֹם",
	"नमस्ते दुनिया! यह हिंदी में एक वाक्य है।",
	"สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
	"Xin chào thế giới! Tiếng Việt có nhiều dấu.",
	"Ἐν ἀρχῇ ἦν ὁ λόγος",
	"ქართული ენა",
	"Հայերեն լեզու",
	"ᚠᛇᚻ᛫ᛒᛦᚦ runes",
	"Ελληνικά, Русский, 中文, 日本語, 한국어, العربية, עברית in one line.",
	"Straße, Mädchen, Œuvre, façade, naïve, coöperate, Ångström, Øre",
	"İstanbul ıi Iİ case",
	"ǅ ǈ ǋ titlecase digraphs",
	"𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒶𝓁𝓅𝒽𝒶",
	"𠜎𠜱𠝹𠱓 supplementary ideographs",
);
// Combining marks and normalization.
add(
	"e\u0301 versus \u00e9", "Cafe\u0301 au lait", "n\u0303 a\u0308 o\u0302 u\u0300",
	"a\u0301\u0302\u0303\u0304\u0305 stacked", "\u0301 leading combining mark", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
	"\u1100\u1161\u11a8 conjoining jamo", "\u0915\u094d\u0937 virama", "ﬁ ﬂ ligatures", "Å vs A\u030a vs \u212b",
);
// Emoji.
add(
	"I ❤️ emoji 😀😃😄😁", "👨‍👩‍👧‍👦 family", "👩🏽‍💻 technologist", "🏳️‍🌈 flag", "🇺🇸🇫🇷🇯🇵 flags",
	"👍🏻👍🏼👍🏽👍🏾👍🏿", "🧑‍🤝‍🧑", "❤️‍🔥", "✈️ ☀️ ⭐", "😀😀😀😀😀😀😀😀", "text😀text", " 😀 ", "1️⃣ 2️⃣ #️⃣",
	"🤖: Hello! 👋 How can I help? 🙂", "emoji at end 🎉", "🎉 emoji at start",
);
// Special-token strings inside text.
const specials = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
	"<|start_header_id|>", "<|end_header_id|>", "<|im_start|>", "<|im_end|>", "<|reserved_special_token_5|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>"];
for (const s of specials) {
	add(s, `before${s}after`, `before ${s} after`, `${s}${s}`, ` ${s}\n`);
}
add(
	"<|endoftext|>The end.<|endoftext|>", "<s>[INST] Hello [/INST]", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
	"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n", "<|endoftext", "endoftext|>", "<|unknown_token|>",
	"<s", "s>", "<<s>>", "<|<|endoftext|>|>", "< s >", "<0x41>", "<0xZZ>", "▁ metaspace char ▁▁ inside",
);
// Invalid-looking but valid strings, control characters, private use.
add("\u0000nul\u0001\u0002", "\u007f\u0080\u009f", "\ue000\uf8ff private use", "\ufffd replacement", "\u200d\u200c joiners", "\u202e right-to-left override");
// Long words and repetition.
add(
	"a".repeat(1000), "ab".repeat(500), " ".repeat(300), "\n".repeat(100), "!".repeat(200), "1".repeat(100), "😀".repeat(100),
	"supercalifragilisticexpialidocious".repeat(20),
	"Pneumonoultramicroscopicsilicovolcanoconiosis",
	"Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
	"x".repeat(3000),
	"日本語".repeat(300),
	Array.from({ length: 200 }, (_, i) => `w${i}`).join(""),
);
// Edge cases of the regexes: Unicode case folding must not reach the
// contractions, JavaScript's \s differs from White_Space (U+0085, U+FEFF),
// and characters newer than Go's Unicode tables (CJK Ext. I, Todhri, Ol
// Onal letters; Kirat Rai and outlined digits).
add(
	"I'\u017f IT'K IT'\u212a", "'S'T'RE'VE'M'LL'D", "''s 's' l'amour d'accord rock 'n' roll", "'\n's '\t't",
	"a\u0085b \u0085 x\ufeff y \ufeff\ufeff", "\u180e\u200b\u2060 invisible", "\u2028\n\u2029\r\n",
	"new letters: " + String.fromCodePoint(0x105c0, 0x105c1, 0x2ebf0, 0x2ebf1, 0x1e5d0, 0x1e5d1) + " and digits " + String.fromCodePoint(0x16d70, 0x16d71, 0x16d72, 0x1ccf0, 0x1ccf1),
	" " + String.fromCodePoint(0x2ebf0) + "x " + String.fromCodePoint(0x16d70) + "1",
	"𝟘𝟙𝟚 math digits", "٣٤٥٦ 12345 ١٢٣٤٥٦٧", "1234567 12 123 1234", "a1b22c333d4444",
	"<|im_start|><|im_end|>", "<s></s><unk>", " <s> </s> ", "x<|eot_id|>\n\n<|start_header_id|>",
	"\t \n \r\n  \t", "a\r\rb", "a\r \nb", "  \n\n  x", "x  \n", "x \t\n \ty",
	"\u1100\u1161\u11a8\u1100\u1161", "Å Å Å", "\u0041\u030a\u0301",
	"!!! ??? ... ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}}", " !a !1 ! 1 !\n", "a.b,c;d:e", "$100 €200 £300 ¥400",
);
// Generated mixtures: deterministic pseudo-random concatenations of fragments.
const frags = ["the", " cat", "'s", " 123", "4567", "\n", "\r\n", "  ", "\t", "😀", "é", "e\u0301", "日本", "안녕", "Привет",
	"!", "?", "...", " (", ")", "<|endoftext|>", "<s>", "</s>", "<|eot_id|>", "<|im_end|>", "\u00a0", " ", "I'LL", "'ve", "x", "_", "-", "—",
	"👨‍👩‍👧", "١٢", "a\u0308", "\u3000", "don't", "  \n", "\n\n", "ﬁ", "Ⅻ", "½"];
let seed = 12345;
const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
for (let k = 0; k < 80; k++) {
	let s = "";
	const n = 1 + rnd(25);
	for (let i = 0; i < n; i++) s += frags[rnd(frags.length)];
	add(s);
}
// Random code points from many blocks (Latin, combining marks, Greek,
// Cyrillic, Hebrew/Arabic, Devanagari, Thai, Hangul jamo, punctuation,
// symbols, CJK, emoji, math letters, controls, scripts newer than Go's
// tables) mixed with words and special tokens.
const blocks = [[0x20, 0x7e], [0x20, 0x7e], [0xa0, 0x24f], [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x6ff],
	[0x900, 0x97f], [0xe00, 0xe7f], [0x1100, 0x11ff], [0x2000, 0x206f], [0x2070, 0x218f], [0x2190, 0x27ff], [0x3000, 0x30ff],
	[0x4e00, 0x4fff], [0xac00, 0xad00], [0xfe00, 0xfe0f], [0xff00, 0xffef], [0x1f300, 0x1faff], [0x1d400, 0x1d7ff],
	[0x0, 0x1f], [0x1e5d0, 0x1e5ff], [0x16d40, 0x16d79]];
for (let k = 0; k < 60; k++) {
	let s = "";
	const n = 1 + rnd(40);
	for (let i = 0; i < n; i++) {
		if (rnd(3) === 0) {
			s += frags[rnd(frags.length)];
		} else {
			const b = blocks[rnd(blocks.length)];
			s += String.fromCodePoint(b[0] + rnd(b[1] - b[0] + 1));
		}
	}
	add(s);
}
// A longer mixed paragraph.
add(t.slice(20, 120).join(" "));

fs.writeFileSync(new URL("corpus.json", import.meta.url), JSON.stringify(t, null, 0) + "\n");
console.log(t.length, "texts");
