#!/usr/bin/env python3
"""Writes the random-weight architecture fixtures of tests/data/arch/ with llama.cpp's gguf-py.

    PYTHONPATH=/path/to/llama.cpp/gguf-py python3 tools/make-arch-fixtures.py [outdir]

Needs an existing llama.cpp checkout (only its gguf-py package, for the writer) and numpy; it
downloads and builds nothing.  The vocabularies come from the repository: the SentencePiece one of
models/stories260K.gguf, and Llama 3's and Qwen2's byte-level BPE ones cut down from
tests/data/vocab/ggml-vocab-{llama-bpe,qwen2}.gguf.xz (see truncated_bpe_vocab).  Everything is drawn from numpy's RandomState with fixed seeds,
so the files are reproducible byte for byte with the same numpy and gguf-py.

The weights are scaled so that the models are decisive: attention logits q.k/sqrt(d) have a
standard deviation of about 4 (so which keys a query attends to, and therefore RoPE, matters) and
the output logits about 4 (so greedy decoding has clear winners and tiny float differences between
implementations do not flip it).
"""
import lzma
import math
import os
import sys

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stories_vocab():
    """The 512-piece SentencePiece vocabulary of the bundled stories260K model."""
    r = gguf.GGUFReader(os.path.join(ROOT, "models", "stories260K.gguf"))
    f = r.fields
    return {
        "model": "llama",
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "scores": f["tokenizer.ggml.scores"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "bos": f["tokenizer.ggml.bos_token_id"].contents(),
        "eos": f["tokenizer.ggml.eos_token_id"].contents(),
        "unk": f["tokenizer.ggml.unknown_token_id"].contents(),
    }


def truncated_bpe_vocab(name, n_keep, specials):
    """A byte-level BPE vocabulary cut down from tests/data/vocab/ggml-vocab-<name>.gguf.xz (the
    bpe suite's copy of the real one): its first n_keep tokens (the 256 byte symbols and the
    first merges' results, in the original order), every merge whose two parts and result are
    among them (in the original order, so BPE ranks are unchanged), then the named special tokens
    (control type) renumbered from n_keep.  bos/eos keep pointing at the same texts."""
    with lzma.open(os.path.join(ROOT, "tests", "data", "vocab", "ggml-vocab-%s.gguf.xz" % name)) as z:
        data = z.read()
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "arch-fixture-%d.gguf" % os.getpid())
    with open(tmp, "wb") as out:
        out.write(data)
    try:
        f = gguf.GGUFReader(tmp).fields
        tokens = f["tokenizer.ggml.tokens"].contents()
        types = f["tokenizer.ggml.token_type"].contents()
        merges = f["tokenizer.ggml.merges"].contents()
        pre = f["tokenizer.ggml.pre"].contents()
        add_bos = bool(f["tokenizer.ggml.add_bos_token"].contents())
        bos_text = tokens[f["tokenizer.ggml.bos_token_id"].contents()]
        eos_text = tokens[f["tokenizer.ggml.eos_token_id"].contents()]
    finally:
        os.unlink(tmp)
    assert all(t == 1 for t in types[:n_keep])
    keep = tokens[:n_keep]
    kept = set(keep)
    out_merges = []
    for m in merges:
        a, b = m.split(" ")
        if a in kept and b in kept and a + b in kept:
            out_merges.append(m)
    index = {t: i for i, t in enumerate(tokens)}
    for sp in specials:
        assert sp in index and types[index[sp]] == 3, sp
    toks = keep + list(specials)
    return {
        "model": "gpt2", "pre": pre, "tokens": toks, "merges": out_merges,
        "types": [1] * n_keep + [3] * len(specials),
        "bos": toks.index(bos_text), "eos": toks.index(eos_text), "add_bos": add_bos,
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
          biases=False, key_length=False, out_gain=3.0, emb_std=1.0, bias_std=1.0):
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
    w.add_tokenizer_model(vocab["model"])
    if "pre" in vocab:
        w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    if "scores" in vocab:
        w.add_token_scores(vocab["scores"])
    w.add_token_types(vocab["types"])
    if "merges" in vocab:
        w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(vocab["bos"])
    w.add_eos_token_id(vocab["eos"])
    if "unk" in vocab:
        w.add_unk_token_id(vocab["unk"])
    if "add_bos" in vocab:
        w.add_add_bos_token(vocab["add_bos"])

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
            w.add_tensor(p + "attn_q.bias", vec(n_head * hd, 0.0, bias_std))
            w.add_tensor(p + "attn_k.bias", vec(n_head_kv * hd, 0.0, bias_std))
            w.add_tensor(p + "attn_v.bias", vec(n_head_kv * hd, 0.0, bias_std))
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
    spm = stories_vocab()
    # Llama 3.1's vocabulary (gpt2, pre llama-bpe) cut to 800 tokens + its special tokens.
    llama3 = truncated_bpe_vocab("llama-bpe", 800, [
        "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eot_id|>"])
    # Qwen2's (gpt2, pre qwen2) cut the same way.
    qwen2 = truncated_bpe_vocab("qwen2", 800, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    # (a) llama, Llama 3.1 style: its vocabulary, rope_freqs (factor 8, low 1, high 4, original
    # context 32 so that it bites at these lengths), freq_base 500000, key_length written, tied
    # output (as SmolLM and Llama 3.2 1B/3B).
    ff = llama31_freq_factors(16, 500000.0, 8.0, 1.0, 4.0, 32)
    write(os.path.join(out, "llama-rope-freqs.gguf"), "llama", 1, llama3, rope_base=500000.0,
          rope_freqs=ff, tied=True, key_length=True, emb_std=0.5)
    # (b) qwen2: its vocabulary, Q/K/V biases, NeoX RoPE, freq_base 1e6, tied output (as
    # Qwen2.5 0.5B-3B).
    write(os.path.join(out, "qwen2-bias.gguf"), "qwen2", 2, qwen2, rope_base=1000000.0,
          biases=True, tied=True, emb_std=0.3, out_gain=5.0, bias_std=0.3)
    # (c) llama with YaRN scaling (factor 4 over an original context of 64), SentencePiece
    # vocabulary, separate output matrix.
    write(os.path.join(out, "llama-yarn.gguf"), "llama", 3, spm,
          scaling=(gguf.RopeScalingType.YARN, 4.0, 64))

if __name__ == "__main__":
    main()
