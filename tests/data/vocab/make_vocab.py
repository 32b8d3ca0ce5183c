#!/usr/bin/env python3
"""Write a vocabulary-only GGUF from a Hugging Face tokenizer.json (+ tokenizer_config.json).

Used once to make the llama-bpe and qwen2 fixtures in this folder (see README.md); not run by
the tests and downloads nothing.  The metadata is what llama.cpp's convert_hf_to_gguf.py writes
for these models: tokenizer.ggml.model = gpt2, tokenizer.ggml.pre, one token per id up to the
model's vocab_size ("[PAD<i>]", UNUSED, for ids without a token), token types (NORMAL, CONTROL
for added tokens that are special or look special "<|...|>", USER_DEFINED for other added
tokens), merges as "left right" strings, bos/eos/pad ids and add_bos/add_eos flags.

usage: PYTHONPATH=<llama.cpp>/gguf-py python3 make_vocab.py DIR OUT.gguf PRESET
       DIR holds tokenizer.json and tokenizer_config.json; PRESET is llama-bpe, qwen2 or gpt-4o.
"""
import json
import sys

import gguf

# architecture hyper-parameters written beside the vocabulary (the shape of Llama-3-8B and
# Qwen2.5-7B); llama.cpp reads them even for a vocabulary-only file
PRESETS = {
    "llama-bpe": dict(arch="llama", name="llama-bpe", vocab_size=128256, ctx=8192, embd=4096,
                      ff=14336, layers=32, heads=32, heads_kv=8, rope_base=500000.0, eps=1e-5,
                      bos="<|begin_of_text|>", eos="<|end_of_text|>", pad=None,
                      add_bos=True, add_eos=False),
    "gpt-4o": dict(arch="llama", name="gpt-4o", vocab_size=200019, ctx=131072, embd=4096,
                   ff=14336, layers=32, heads=32, heads_kv=8, rope_base=500000.0, eps=1e-5,
                   bos="<|endoftext|>", eos="<|endoftext|>", pad=None,
                   add_bos=False, add_eos=False),
    "qwen2": dict(arch="qwen2", name="qwen2", vocab_size=151936, ctx=32768, embd=3584,
                  ff=18944, layers=28, heads=28, heads_kv=4, rope_base=1000000.0, eps=1e-6,
                  bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>",
                  add_bos=False, add_eos=False),
}


def looks_special(text):
    return text.startswith("<|") and text.endswith("|>")


def main():
    src, out, preset = sys.argv[1], sys.argv[2], sys.argv[3]
    p = PRESETS[preset]
    tj = json.load(open(f"{src}/tokenizer.json", encoding="utf-8"))
    model = tj["model"]
    assert model["type"] == "BPE"
    by_id = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for a in tj["added_tokens"]:
        kind = gguf.TokenType.CONTROL if a["special"] or looks_special(a["content"]) \
            else gguf.TokenType.USER_DEFINED
        by_id[a["id"]] = (a["content"], kind)
    assert max(by_id) < p["vocab_size"]
    tokens, types = [], []
    for i in range(p["vocab_size"]):
        t, k = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(t)
        types.append(k)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    ids = {t: i for i, t in enumerate(tokens)}

    w = gguf.GGUFWriter(out, p["arch"])
    w.add_name(p["name"])
    w.add_context_length(p["ctx"])
    w.add_embedding_length(p["embd"])
    w.add_feed_forward_length(p["ff"])
    w.add_block_count(p["layers"])
    w.add_head_count(p["heads"])
    w.add_head_count_kv(p["heads_kv"])
    w.add_rope_freq_base(p["rope_base"])
    w.add_layer_norm_rms_eps(p["eps"])
    w.add_vocab_size(p["vocab_size"])
    w.add_rope_dimension_count(p["embd"] // p["heads"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(preset)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids[p["bos"]])
    w.add_eos_token_id(ids[p["eos"]])
    if p["pad"]:
        w.add_pad_token_id(ids[p["pad"]])
    w.add_add_bos_token(p["add_bos"])
    w.add_add_eos_token(p["add_eos"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out}: {len(tokens)} tokens, {len(merges)} merges, pre {preset}")


if __name__ == "__main__":
    main()
