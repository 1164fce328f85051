"""Reference for galleon generate's speed: greedy decoding with a KV cache in
plain PyTorch, at a Llama-family shape with random weights.

usage: torch_generate.py [prompt_tokens new_tokens] [hidden layers heads kv_heads intermediate vocab]
(defaults: 26 64, SmolLM2-135M: 576 30 9 3 1536 49152, tied head; $THREADS
threads, default 2)

Prints one JSON line with prefill and decode tokens/s, measured as galleon
generate -json measures them: prefill is the prompt's forward pass and the
first token, decode every token after it.
"""
import json, os, sys, time
import torch

P, N = (list(map(int, sys.argv[1:3])) + [26, 64][len(sys.argv[1:3]):])
C, L, H, KV, I, V = (list(map(int, sys.argv[3:9])) + [576, 30, 9, 3, 1536, 49152][len(sys.argv[3:9]):])
D = C // H
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)
torch.set_grad_enabled(False)
w = lambda *s: torch.randn(*s) * 0.02
emb = w(V, C)
layers = [dict(n1=torch.ones(C), q=w(H * D, C), k=w(KV * D, C), v=w(KV * D, C), o=w(C, H * D),
               n2=torch.ones(C), g=w(I, C), u=w(I, C), d=w(C, I)) for _ in range(L)]
norm = torch.ones(C)
inv = 1.0 / (1e5 ** (torch.arange(0, D, 2).float() / D))

def rms(x, g): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * g

def rope(x, pos):  # x [heads, T, D], rotate-half
    f = pos[:, None].float() * inv[None, :]
    cos, sin = torch.cat([f, f], -1).cos(), torch.cat([f, f], -1).sin()
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin

def forward(ids, cache, start):
    x = emb[ids]  # [T, C]
    T = len(ids)
    pos = torch.arange(start, start + T)
    for l, c in zip(layers, cache):
        h = rms(x, l['n1'])
        q = rope((h @ l['q'].t()).view(T, H, D).transpose(0, 1), pos)
        k = rope((h @ l['k'].t()).view(T, KV, D).transpose(0, 1), pos)
        v = (h @ l['v'].t()).view(T, KV, D).transpose(0, 1)
        c['k'] = torch.cat([c['k'], k], 1) if c['k'] is not None else k
        c['v'] = torch.cat([c['v'], v], 1) if c['v'] is not None else v
        kk = c['k'].repeat_interleave(H // KV, 0)
        vv = c['v'].repeat_interleave(H // KV, 0)
        s = q @ kk.transpose(1, 2) / D ** 0.5
        S = kk.shape[1]
        mask = torch.ones(T, S).tril(S - T).bool()
        a = s.masked_fill(~mask, float('-inf')).softmax(-1) @ vv
        x = x + a.transpose(0, 1).reshape(T, H * D) @ l['o'].t()
        h = rms(x, l['n2'])
        x = x + (torch.nn.functional.silu(h @ l['g'].t()) * (h @ l['u'].t())) @ l['d'].t()
    return rms(x[-1:], norm) @ emb.t()

ids = torch.randint(0, V, (P,))
for rep in range(2):  # the first run warms up
    cache = [dict(k=None, v=None) for _ in range(L)]
    t0 = time.perf_counter()
    tok = forward(ids, cache, 0).argmax(-1)
    t1 = time.perf_counter()
    n = P
    for _ in range(N - 1):
        tok = forward(tok, cache, n).argmax(-1)
        n += 1
    t2 = time.perf_counter()
print(json.dumps({"threads": torch.get_num_threads(), "prompt_tokens": P, "generated_tokens": N,
                  "prefill_tokens_per_second": P / (t1 - t0), "decode_tokens_per_second": (N - 1) / (t2 - t1)}))
