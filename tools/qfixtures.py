#!/usr/bin/env python3
"""tools/qfixtures.py — the Python half of tools/make-qfixtures.sh (see tests/data/quant/README.md).

Needs numpy and llama.cpp's gguf-py (PYTHONPATH=<llama.cpp>/gguf-py).  Subcommands:

  decisive IN OUT --strength A --layer-gain G --seed S
      Rewrites a random-weight F32 model from longheads-mkmodel so that its greedy next token is
      decisive: token_embd is rescaled to unit standard deviation (so the residual stream is led
      by the current token), and every token t gets a successor succ(t) (a random word token):
      output.weight row succ(t) gains (A / n_embd) * token_embd[t], which adds about A to the
      successor's logit while the others move by about A / sqrt(n_embd).  attn_output and
      ffn_down are multiplied by G so that the layers still move every logit (perplexity must
      notice a broken layer kernel).  Everything else (metadata, the other random weights) is
      copied unchanged.  On the words, succ is one
      cycle through all of them (a greedy text visits every word); other tokens lead to a
      random word.
  words OUT --model GGUF --count N --seed S
      A text of N words drawn at random from the model's word tokens ("▁a", "▁b", ...): a
      context that the synthetic vocabulary tokenizes one token per word.
  types FILE...
      One line per tensor: file, tensor, type, shape (what llama-quantize actually wrote).
  dequant OUT_PREFIX FILE...
      For every tensor type found in FILEs (F32 excepted), the first tensor of that type (files
      with the fewest distinct types first) is
      dequantized with gguf-py's numpy reference (gguf.quants.dequantize); writes OUT_PREFIX.txt
      (one line per type: type file tensor n_cols n_rows fnv1a64-of-all-values offset) and
      OUT_PREFIX.bin (float32 little-endian values of the first and the last row of each, at
      the given byte offset).
  same A B
      Exit status 0 when the two files hold the same tensors (names, types, bytes).
  greedy LOG
      The token ids llama-cli evaluated after the prompt, from its --verbose log ("eval: [...]").
  prompt LOG
      The prompt's token ids (the first batch llama-cli evaluated).
"""
import random
import re
import sys

import numpy as np

import gguf
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize


def copy_metadata(reader, writer):
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith('GGUF.'):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)


def arch_of(reader):
    return reader.fields[gguf.Keys.General.ARCHITECTURE].contents()


def word_tokens(reader):
    toks = reader.fields['tokenizer.ggml.tokens'].contents()
    types = reader.fields['tokenizer.ggml.token_type'].contents()
    return [i for i, (t, ty) in enumerate(zip(toks, types)) if ty == 1 and t.startswith('\u2581')], toks


def cmd_decisive(args):
    src, dst = args[0], args[1]
    strength = float(args[args.index('--strength') + 1])
    gain = float(args[args.index('--layer-gain') + 1])
    seed = int(args[args.index('--seed') + 1])
    rng = np.random.default_rng(seed)
    r = GGUFReader(src)
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors}
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, f'{t.name}: not F32'
    emb = tensors['token_embd.weight']            # (n_vocab, n_embd)
    emb = emb / emb.std()
    out = tensors['output.weight'].copy()         # (n_vocab, n_embd)
    words, _ = word_tokens(r)
    order = rng.permutation(words)
    succ = rng.choice(words, size=emb.shape[0])   # specials and bytes: any word
    succ[order] = np.roll(order, -1)              # words: one cycle through all of them
    np.add.at(out, succ, (strength / emb.shape[1]) * emb)
    tensors['token_embd.weight'] = emb.astype(np.float32)
    tensors['output.weight'] = out.astype(np.float32)
    for name in tensors:
        if name.endswith('.attn_output.weight') or name.endswith('.ffn_down.weight'):
            tensors[name] = (tensors[name] * gain).astype(np.float32)
    w = GGUFWriter(dst, arch_of(r))
    copy_metadata(r, w)
    for t in r.tensors:
        w.add_tensor(t.name, tensors[t.name], raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_words(args):
    out = args[0]
    model = args[args.index('--model') + 1]
    count = int(args[args.index('--count') + 1])
    rnd = random.Random(int(args[args.index('--seed') + 1]))
    words, toks = word_tokens(GGUFReader(model))
    text = ' '.join(toks[rnd.choice(words)][1:] for _ in range(count))
    with open(out, 'w') as f:
        f.write(text + '\n')


def cmd_types(args):
    for path in args:
        for t in GGUFReader(path).tensors:
            shape = 'x'.join(str(int(n)) for n in t.shape)
            print(f'{path.split("/")[-1]} {t.name} {t.tensor_type.name} {shape}')


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for byte in b:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def cmd_dequant(args):
    prefix, paths = args[0], args[1:]
    # files with the fewest distinct types first: a reader that lacks one type can still open
    # the file that holds another
    paths = sorted(paths, key=lambda p: (len({t.tensor_type for t in GGUFReader(p).tensors}), p))
    seen = {}
    for path in paths:
        for t in GGUFReader(path).tensors:
            if t.tensor_type == gguf.GGMLQuantizationType.F32 or t.tensor_type.name in seen:
                continue
            seen[t.tensor_type.name] = (path, t)
    lines, blob = [], bytearray()
    for name in sorted(seen, key=lambda n: int(gguf.GGMLQuantizationType[n])):
        path, t = seen[name]
        vals = dequantize(np.array(t.data), t.tensor_type).astype('<f4', copy=False)
        n_cols = int(t.shape[0])
        vals = vals.reshape(-1, n_cols)
        raw = vals.tobytes()
        off = len(blob)
        blob += vals[0].tobytes() + vals[-1].tobytes()
        lines.append(f'{name} {path.split("/")[-1]} {t.name} {n_cols} {vals.shape[0]} '
                     f'{fnv1a64(raw):016x} {off}')
    with open(prefix + '.txt', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(prefix + '.bin', 'wb') as f:
        f.write(bytes(blob))


def cmd_same(args):
    a, b = GGUFReader(args[0]).tensors, GGUFReader(args[1]).tensors
    same = len(a) == len(b) and all(
        x.name == y.name and x.tensor_type == y.tensor_type and
        np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8))
        for x, y in zip(a, b))
    sys.exit(0 if same else 1)


def evals(path):
    """The ids of each "eval: [ 'piece':id, ... ]" batch.  Pieces are printed raw, so a batch
    spans lines when it holds a newline token."""
    with open(path, errors='replace') as f:
        log = f.read()
    return [[int(x) for x in re.findall(r"':(\d+)(?=, '|$)", m.group(1), flags=re.S)]
            for m in re.finditer(r"^eval: \[ (.*?) \]$", log, flags=re.M | re.S)]


def cmd_greedy(args):
    print(' '.join(str(i) for ev in evals(args[0])[1:] for i in ev))   # [0] is the prompt


def cmd_prompt(args):
    print(' '.join(str(i) for i in evals(args[0])[0]))


if __name__ == '__main__':
    cmds = {'decisive': cmd_decisive, 'words': cmd_words, 'types': cmd_types,
            'dequant': cmd_dequant, 'same': cmd_same, 'greedy': cmd_greedy,
            'prompt': cmd_prompt}
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        sys.stderr.write(__doc__)
        sys.exit(2)
    cmds[sys.argv[1]](sys.argv[2:])
