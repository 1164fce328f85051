"""Golden inverse frequencies for nn.RopeFreqs (TestRopeFreqsMatchTorch).

The default, linear and llama3 computations of transformers'
modeling_rope_utils.py (_compute_default_rope_parameters,
_compute_linear_scaling_rope_parameters, _compute_llama3_parameters),
restated line by line in torch, in float32 as they run there; transformers
itself is not installed on the machine that generated the file.

Run: env -u OPENBLAS_CORETYPE /usr/bin/python3 rope_freqs.py > rope_freqs.json
"""
import json
import math

import torch


def default(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(dtype=torch.float) / dim))


def linear(base, dim, factor):
    inv_freq = default(base, dim)
    inv_freq /= factor
    return inv_freq


def llama3(base, dim, factor, low_freq_factor, high_freq_factor, old_context_len):
    inv_freq = default(base, dim)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


cases = []
for dim, base in [(64, 10000.0), (64, 100000.0), (80, 1000000.0), (6, 10000.0), (128, 500000.0)]:
    cases.append({"head_dim": dim, "theta": base, "scaling": None, "inv_freq": default(base, dim).tolist()})
for dim, base, factor in [(64, 10000.0, 2.0), (128, 10000.0, 4.0)]:
    cases.append({"head_dim": dim, "theta": base, "scaling": {"type": "linear", "factor": factor},
                  "inv_freq": linear(base, dim, factor).tolist()})
for dim, base, factor, low, high, old in [
    (128, 500000.0, 8.0, 1.0, 4.0, 8192),   # Llama 3.1
    (64, 500000.0, 32.0, 1.0, 4.0, 8192),   # Llama 3.2 1B
    (16, 10000.0, 4.0, 1.0, 4.0, 64),       # small context: every branch taken
    (14, 10000.0, 3.0, 1.5, 5.0, 100),
]:
    cases.append({"head_dim": dim, "theta": base,
                  "scaling": {"type": "llama3", "factor": factor, "low_freq_factor": low,
                              "high_freq_factor": high, "original_max_position_embeddings": old},
                  "inv_freq": llama3(base, dim, factor, low, high, old).tolist()})
print(json.dumps({"torch": torch.__version__, "cases": cases}, indent=1))
