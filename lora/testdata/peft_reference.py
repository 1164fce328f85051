#!/usr/bin/python3
"""Independent float64 reference of PEFT's LoRA on Hugging Face models,
written from the semantics of PEFT's tuners/lora (layer.py, model.py),
tuners_utils.check_target_module_exists, utils/other.get_pattern_key and
utils/save_and_load (peft is not installed here).

For each KIND directory under GOLDEN (llama, qwen2, gpt2) holding
  base/             a tiny random model directory written by galleon
  galleon_adapter/  a LoRA adapter written by galleon's Adapter.Save
it writes
  peft_adapter/     a LoRA adapter as PEFT saves one (no ".default" in the
                    names, rsLoRA, fan_in_fan_out per family, per-module
                    rank/alpha patterns, and layers_to_transform or a
                    regular-expression target string)
  golden.json       {"ids", "base", "galleon_adapter", "peft_adapter"}: the
                    logits of the base model and of the base with each
                    adapter, in float64, as PeftModel.from_pretrained(base,
                    adapter) computes them (W + scale·B·A on each targeted
                    module; the forward of model/testdata/hf_reference.py).

usage: peft_reference.py GOLDEN
"""
import json, math, os, re, struct, sys
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "..", "model", "testdata", "hf_reference.py")

# hf_reference.py runs its command line when executed; take its functions
# (load, read_safetensors, gpt2, llama) without a trailing unguarded main()
# call (a guarded one does not run under this __name__).
_lines = open(REF).read().rstrip().split("\n")
if _lines[-1] == "main()":
    _lines = _lines[:-1]
ref = {"__name__": "hf_reference"}
exec(compile("\n".join(_lines) + "\n", REF, "exec"), ref)
for _f in ("load", "read_safetensors", "gpt2", "llama"):
    assert _f in ref, "hf_reference.py has no " + _f

torch.set_default_dtype(torch.float64)
PREFIX = "base_model.model."


def linear_modules(cfg, w):
    """The model's linear modules (HF names) and whether each is a Conv1D
    (GPT-2's blocks, weight [in, out]) or a torch.nn.Linear ([out, in])."""
    mods = {}
    if cfg["model_type"] == "gpt2":
        pre = "transformer." if any(k.startswith("transformer.") for k in w) else ""
        for i in range(cfg["n_layer"]):
            for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                mods["%sh.%d.%s" % (pre, i, m)] = True
    else:
        for i in range(cfg["num_hidden_layers"]):
            for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
                mods["model.layers.%d.%s" % (i, m)] = False
    mods["lm_head"] = False  # the output head module exists even when tied
    return mods


def targeted(c, key):
    """check_target_module_exists for a LoRA config c and a module name."""
    ex = c.get("exclude_modules")
    if ex:
        if isinstance(ex, str):
            if re.fullmatch(ex, key):
                return False
        elif key in ex or any(key.endswith("." + e) for e in ex):
            return False
    t = c["target_modules"]
    if isinstance(t, str):
        return re.fullmatch(t, key) is not None
    if key in t:
        return True
    found = any(key.endswith("." + e) for e in t)
    layers = c.get("layers_to_transform")
    if found and layers is not None and (not isinstance(layers, list) or len(layers) > 0):
        pat = c.get("layers_pattern")
        m = None
        if not pat:
            m = re.match(r".*?\.[^.]*\.(\d+)\.", key)
        else:
            for p in [pat] if isinstance(pat, str) else pat:
                m = re.match(r".*?\.%s\.(\d+)\." % p, key)
                if m:
                    break
        if m is None:
            return False
        i = int(m.group(1))
        return i == layers if isinstance(layers, int) else i in layers
    return found


def pattern_value(patterns, key, default):
    """get_pattern_key: the first pattern matching the name or its part
    after a dot, in the file's order."""
    for p, v in patterns.items():
        if re.match(r"(.*\.)?(%s)$" % p, key):
            return v
    return default


def adapted_weights(base_dir, adapter_dir):
    cfg, w = ref["load"](base_dir)
    c = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    assert c["peft_type"] == "LORA" and c.get("bias", "none") == "none" and not c.get("use_dora")
    mods = linear_modules(cfg, w)
    t = c["target_modules"]
    if isinstance(t, str) and t.lower() == "all-linear":
        c = dict(c, target_modules=[m for m in mods if m != "lm_head"])
    chosen = [m for m in mods if targeted(c, m)]
    tensors = ref["read_safetensors"](os.path.join(adapter_dir, "adapter_model.safetensors"))
    ab = {}
    for name, v in tensors.items():
        assert name.startswith(PREFIX), name
        n = name[len(PREFIX):].replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        mod, which, last = n.rsplit(".", 2)
        assert which in ("lora_A", "lora_B") and last == "weight", name
        ab[(mod, which)] = v
    assert sorted({m for m, _ in ab}) == sorted(chosen), (sorted({m for m, _ in ab}), chosen)
    if cfg["model_type"] == "gpt2":
        assert c.get("fan_in_fan_out") is True, "GPT-2 adapters have fan_in_fan_out true (Conv1D)"
    else:
        assert c.get("fan_in_fan_out") is False, "Llama-family adapters have fan_in_fan_out false"
    for m in chosen:
        A, B = ab[(m, "lora_A")], ab[(m, "lora_B")]
        r = pattern_value(c.get("rank_pattern") or {}, m, c["r"])
        alpha = pattern_value(c.get("alpha_pattern") or {}, m, c["lora_alpha"])
        assert A.shape[0] == r and B.shape[1] == r, (m, A.shape, B.shape, r)
        scale = alpha / math.sqrt(r) if c.get("use_rslora") else alpha / r
        delta = scale * (B @ A)  # [out, in]
        key = m + ".weight"
        if mods[m]:  # Conv1D: the weight is [in, out] (fan_in_fan_out)
            delta = delta.T
        assert w[key].shape == delta.shape, (key, w[key].shape, delta.shape)
        w[key] = w[key] + delta
    return cfg, w, len(chosen)


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        b = t.to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# The adapter PEFT would save for each kind (save_pretrained strips the
# adapter name; tensors float32; fan_in_fan_out as PEFT sets it per layer
# type).
PEFT_CONFIGS = {
    "llama": dict(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
                  r=4, lora_alpha=8, use_rslora=True, fan_in_fan_out=False, layers_to_transform=[1], layers_pattern="layers",
                  rank_pattern={"down_proj": 2, "lm_head": 3}, alpha_pattern={"lm_head": 5}),
    "qwen2": dict(target_modules=r"model\.layers\.\d+\.(self_attn\.(q|k|v)_proj|mlp\.up_proj)", r=3, lora_alpha=5,
                  use_rslora=True, fan_in_fan_out=False, rank_pattern={"layers.0.self_attn.q_proj": 6}, alpha_pattern={}),
    "gpt2": dict(target_modules=["c_attn", "c_proj", "c_fc"], r=4, lora_alpha=16, use_rslora=True, fan_in_fan_out=True,
                 rank_pattern={"mlp.c_proj": 2}, alpha_pattern={}),
}


def write_peft_adapter(kind, base_dir, out_dir, gen):
    cfg, w = ref["load"](base_dir)
    c = dict(peft_type="LORA", task_type="CAUSAL_LM", base_model_name_or_path="galleon/tiny-" + kind, revision=None,
             inference_mode=True, lora_dropout=0.0, exclude_modules=None, bias="none", use_dora=False,
             init_lora_weights=True, modules_to_save=None, layers_to_transform=None, layers_pattern=None,
             megatron_config=None, megatron_core="megatron.core", loftq_config={}, layer_replication=None,
             lora_bias=False, target_parameters=None, trainable_token_indices=None, peft_version="0.17.1")
    c.update(PEFT_CONFIGS[kind])
    mods = linear_modules(cfg, w)
    tensors = []
    for m in mods:
        if not targeted(c, m):
            continue
        wt = w[m + ".weight"] if m + ".weight" in w else None
        assert wt is not None, m
        fin, fout = (wt.shape[0], wt.shape[1]) if mods[m] else (wt.shape[1], wt.shape[0])
        r = pattern_value(c["rank_pattern"], m, c["r"])
        A = (torch.rand(r, fin, generator=gen) * 2 - 1) / math.sqrt(fin)
        B = torch.randn(fout, r, generator=gen) * 0.05
        tensors += [(PREFIX + m + ".lora_A.weight", A), (PREFIX + m + ".lora_B.weight", B)]
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "adapter_model.safetensors"), tensors)
    json.dump(c, open(os.path.join(out_dir, "adapter_config.json"), "w"), indent=2)


def main():
    golden = sys.argv[1]
    gen = torch.Generator().manual_seed(20261203)
    for kind in sorted(os.listdir(golden)):
        d = os.path.join(golden, kind)
        if not os.path.isdir(os.path.join(d, "base")):
            continue
        base = os.path.join(d, "base")
        write_peft_adapter(kind, base, os.path.join(d, "peft_adapter"), gen)
        cfg, w = ref["load"](base)
        V = cfg["vocab_size"]
        ids = torch.randint(0, V, (11,), generator=gen).tolist()
        f = ref["gpt2"] if cfg["model_type"] == "gpt2" else ref["llama"]
        out = {"ids": ids, "base": f(cfg, w, ids).reshape(-1).tolist()}
        for a in ("galleon_adapter", "peft_adapter"):
            acfg, aw, n = adapted_weights(base, os.path.join(d, a))
            out[a] = f(acfg, aw, ids).reshape(-1).tolist()
            out[a + "_modules"] = n
        json.dump(out, open(os.path.join(d, "golden.json"), "w"))
        print(kind, "modules:", out["galleon_adapter_modules"], out["peft_adapter_modules"])


main()
