#!/usr/bin/python3
"""Independent float64 forward of Hugging Face GPT-2 and Llama-family
(llama, mistral, qwen2) checkpoints, written from the semantics of
transformers' modeling_gpt2.py and modeling_llama.py (transformers is not
installed here): reads a model directory (config.json, model.safetensors or
the shards of model.safetensors.index.json; F32/F16/BF16) and prints the
logits of one sequence of token ids as JSON, for each directory given.

usage: hf_reference.py ID,ID,... DIR...  (one list of logits per directory)
"""
import json, math, os, struct, sys
import torch

torch.set_default_dtype(torch.float64)


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = bytearray(data[b:end])
        shape = e["shape"]
        if e["dtype"] == "F32":
            t = torch.frombuffer(buf, dtype=torch.float32)
        elif e["dtype"] == "F16":
            t = torch.frombuffer(buf, dtype=torch.float16)
        elif e["dtype"] == "BF16":
            # bfloat16 is the top half of a float32
            i16 = torch.frombuffer(buf, dtype=torch.int16).to(torch.int32)
            t = ((i16 & 0xFFFF) << 16).view(torch.float32)
        else:
            t = torch.frombuffer(buf, dtype=torch.uint8)
        out[name] = t.to(torch.float64).reshape(shape)
    return out


def load(dir):
    cfg = json.load(open(os.path.join(dir, "config.json")))
    single = os.path.join(dir, "model.safetensors")
    if os.path.exists(single):
        w = read_safetensors(single)
    else:
        idx = json.load(open(os.path.join(dir, "model.safetensors.index.json")))
        w = {}
        for f in sorted(set(idx["weight_map"].values())):
            w.update(read_safetensors(os.path.join(dir, f)))
    return cfg, w


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gpt2(cfg, w, ids):
    g = lambda k: w["transformer." + k] if "transformer." + k in w else w[k]
    D, H = cfg["n_embd"], cfg["n_head"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    T = len(ids)
    hd = D // H
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (D,), g(p + ".weight"), g(p + ".bias"), eps)
    x = g("wte.weight")[ids] + g("wpe.weight")[:T]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(cfg["n_layer"]):
        p = "h.%d." % i
        h = ln(x, p + "ln_1")
        qkv = h @ g(p + "attn.c_attn.weight") + g(p + "attn.c_attn.bias")  # Conv1D: [in, out]
        q, k, v = qkv.split(D, dim=1)
        q, k, v = (t.reshape(T, H, hd).transpose(0, 1) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1) @ v
        a = a.transpose(0, 1).reshape(T, D)
        x = x + a @ g(p + "attn.c_proj.weight") + g(p + "attn.c_proj.bias")
        h = ln(x, p + "ln_2")
        h = gelu_new(h @ g(p + "mlp.c_fc.weight") + g(p + "mlp.c_fc.bias"))
        x = x + h @ g(p + "mlp.c_proj.weight") + g(p + "mlp.c_proj.bias")
    x = ln(x, "ln_f")
    head = w["lm_head.weight"] if not cfg.get("tie_word_embeddings", True) else g("wte.weight")
    return x @ head.T


def rope_inv_freq(cfg, hd):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / theta ** (torch.arange(0, hd, 2) / hd)
    s = cfg.get("rope_scaling")
    if not s:
        return inv, 1.0
    typ = s.get("rope_type", s.get("type"))
    if typ == "linear":
        return inv, float(s["factor"])
    if typ == "llama3":
        f, lo, hi, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = torch.where(wl > lo_wl, inv / f, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / f + smooth * out
        mid = ~(wl < hi_wl) & ~(wl > lo_wl)
        return torch.where(mid, smoothed, out), 1.0
    raise SystemExit("unsupported rope_scaling " + str(s))


def llama(cfg, w, ids):
    mt = cfg["model_type"]
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    hd = cfg.get("head_dim") or D // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    T = len(ids)
    rms = lambda x, wt: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * wt

    def lin(x, p):  # torch.nn.Linear: weight [out, in]
        y = x @ w[p + ".weight"].T
        return y + w[p + ".bias"] if p + ".bias" in w else y

    inv, div = rope_inv_freq(cfg, hd)
    pos = torch.arange(T) / div
    freqs = torch.outer(pos, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    rot = lambda x: torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], dim=-1)
    mask = torch.full((T, T), float("-inf")).triu(1)
    win = cfg.get("sliding_window") if mt == "mistral" or cfg.get("use_sliding_window") else None
    if win:
        i = torch.arange(T)
        mask = mask.masked_fill(i[:, None] - i[None, :] >= win, float("-inf"))
    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms(x, w[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").reshape(T, H, hd).transpose(0, 1)
        k = lin(h, p + "self_attn.k_proj").reshape(T, KV, hd).transpose(0, 1)
        v = lin(h, p + "self_attn.v_proj").reshape(T, KV, hd).transpose(0, 1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(H // KV, dim=0), v.repeat_interleave(H // KV, dim=0)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1) @ v
        x = x + lin(a.transpose(0, 1).reshape(T, H * hd), p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        h = torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj")
        x = x + lin(h, p + "mlp.down_proj")
    x = rms(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def main():
    ids = [int(t) for t in sys.argv[1].split(",")]
    out = []
    for d in sys.argv[2:]:
        cfg, w = load(d)
        f = gpt2 if cfg["model_type"] == "gpt2" else llama
        out.append(f(cfg, w, ids).reshape(-1).tolist())
    print(json.dumps(out))


main()
