#!/usr/bin/env python3
"""Writes the random-weight architecture fixtures of tests/data/arch/ with llama.cpp's gguf-py.

    PYTHONPATH=/path/to/llama.cpp/gguf-py python3 tools/make-arch-fixtures.py [outdir]

Needs an existing llama.cpp checkout (only its gguf-py package, for the writer) and numpy; it
downloads and builds nothing.  The vocabulary (512 SentencePiece pieces) is copied from the
bundled models/stories260K.gguf.  Everything is drawn from numpy's RandomState with fixed seeds,
so the files are reproducible byte for byte with the same numpy and gguf-py.

The weights are scaled so that the models are decisive: attention logits q.k/sqrt(d) have a
standard deviation of about 4 (so which keys a query attends to, and therefore RoPE, matters) and
the output logits about 4 (so greedy decoding has clear winners and tiny float differences between
implementations do not flip it).
"""
import math
import os
import sys

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stories_vocab():
    r = gguf.GGUFReader(os.path.join(ROOT, "models", "stories260K.gguf"))
    f = r.fields
    return {
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "scores": f["tokenizer.ggml.scores"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "bos": f["tokenizer.ggml.bos_token_id"].contents(),
        "eos": f["tokenizer.ggml.eos_token_id"].contents(),
        "unk": f["tokenizer.ggml.unknown_token_id"].contents(),
    }


def llama31_freq_factors(n_rot, base, factor, low, high, orig_ctx):
    """Llama 3.1's rope_freqs (convert_hf_to_gguf.py's formula, HF's rope_type "llama3"):
    1 for short wavelengths, `factor` for long ones, smooth in between."""
    out = []
    for i in range(n_rot // 2):
        freq = base ** (-2.0 * i / n_rot)
        wavelen = 2 * math.pi / freq
        low_wavelen = orig_ctx / low
        high_wavelen = orig_ctx / high
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (orig_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write(path, arch, seed, vocab, *, n_embd=64, n_head=4, n_head_kv=2, n_ff=128, n_layer=2,
          n_ctx=256, rope_base=10000.0, rope_freqs=None, scaling=None, tied=False,
          biases=False, key_length=False, out_gain=3.0, emb_std=1.0):
    rng = np.random.RandomState(seed)
    hd = n_embd // n_head
    n_vocab = len(vocab["tokens"])
    w = gguf.GGUFWriter(path, arch)
    w.add_name("longheads arch fixture " + os.path.basename(path))
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    if key_length:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if scaling:
        kind, factor, orig = scaling
        w.add_rope_scaling_type(kind)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(orig)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(vocab["tokens"])
    w.add_token_scores(vocab["scores"])
    w.add_token_types(vocab["types"])
    w.add_bos_token_id(vocab["bos"])
    w.add_eos_token_id(vocab["eos"])
    w.add_unk_token_id(vocab["unk"])

    def mat(n_out, n_in, gain):
        # gguf-py takes numpy arrays in row-major (n_out, n_in): ggml dims [n_in, n_out]
        return (rng.standard_normal((n_out, n_in)) * gain / math.sqrt(n_in)).astype(np.float32)

    def vec(n, mean, std):
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    w.add_tensor("token_embd.weight", (emb_std * rng.standard_normal((n_vocab, n_embd))).astype(np.float32))
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", rope_freqs)
    for l in range(n_layer):
        p = "blk.%d." % l
        w.add_tensor(p + "attn_norm.weight", vec(n_embd, 1.0, 0.1))
        w.add_tensor(p + "attn_q.weight", mat(n_head * hd, n_embd, 2.0))
        w.add_tensor(p + "attn_k.weight", mat(n_head_kv * hd, n_embd, 2.0))
        w.add_tensor(p + "attn_v.weight", mat(n_head_kv * hd, n_embd, 1.0))
        if biases:
            w.add_tensor(p + "attn_q.bias", vec(n_head * hd, 0.0, 1.0))
            w.add_tensor(p + "attn_k.bias", vec(n_head_kv * hd, 0.0, 1.0))
            w.add_tensor(p + "attn_v.bias", vec(n_head_kv * hd, 0.0, 1.0))
        w.add_tensor(p + "attn_output.weight", mat(n_embd, n_head * hd, out_gain))
        w.add_tensor(p + "ffn_norm.weight", vec(n_embd, 1.0, 0.1))
        w.add_tensor(p + "ffn_gate.weight", mat(n_ff, n_embd, 1.0))
        w.add_tensor(p + "ffn_up.weight", mat(n_ff, n_embd, 1.0))
        w.add_tensor(p + "ffn_down.weight", mat(n_embd, n_ff, out_gain))
    w.add_tensor("output_norm.weight", vec(n_embd, 1.0, 0.1))
    if not tied:
        w.add_tensor("output.weight", mat(n_vocab, n_embd, 4.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "arch")
    os.makedirs(out, exist_ok=True)
    vocab = stories_vocab()
    # (a) llama, Llama 3.1 style: rope_freqs (factor 8, low 1, high 4, original context 32 so that
    # it bites at these lengths), freq_base 500000, key_length written, tied output (SmolLM).
    ff = llama31_freq_factors(16, 500000.0, 8.0, 1.0, 4.0, 32)
    write(os.path.join(out, "llama-rope-freqs.gguf"), "llama", 1, vocab, rope_base=500000.0,
          rope_freqs=ff, tied=True, key_length=True, emb_std=0.5)
    # (b) qwen2: Q/K/V biases, NeoX RoPE, freq_base 1e6, separate output matrix.
    write(os.path.join(out, "qwen2-bias.gguf"), "qwen2", 2, vocab, rope_base=1000000.0,
          biases=True)
    # (c) llama with YaRN scaling: factor 4 over an original context of 64.
    write(os.path.join(out, "llama-yarn.gguf"), "llama", 3, vocab,
          scaling=(gguf.RopeScalingType.YARN, 4.0, 64))


if __name__ == "__main__":
    main()
