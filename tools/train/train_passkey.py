#!/usr/bin/python3
"""tools/train/train_passkey.py — the tiny passkey models (see models/PASSKEY.md).

Trains a small LLaMA at 256 tokens on the passkey prompt of the LongHeads paper (Lu et al.
2024, arXiv:2402.10685, after Mohtashami & Jaggi's landmark-attention test) and exports it as a
GGUF "llama" model with its own SentencePiece-style vocabulary, through tools/train/gguf_writer.py.
Run by hand with Debian's torch (not part of the build or CI):

    apt-get install -y python3-torch libopenblas0-openmp
    /usr/bin/python3 tools/train/train_passkey.py tokens            # vocabulary + skeleton
    /usr/bin/python3 tools/train/train_passkey.py train --out models/passkey-plain.gguf ...
    /usr/bin/python3 tools/train/train_passkey.py eval --model models/passkey-plain.gguf ...

Model: token embedding, n_layer x [RMSNorm -> attention (RoPE, adjacent-pair layout as GGUF
llama / llama.cpp "norm" rope: pair (2i, 2i+1) turned by pos * theta^(-2i/head_dim)) -> residual,
RMSNorm -> SwiGLU -> residual], RMSNorm, untied output.  eps 1e-5, theta 10000.

Objective: next-token cross-entropy over the whole sample, the answer (" " + 5 digits) weighted
5x.  With --align, the selection-alignment loss is added: for every layer, head and query inside
the 256-token window, the cross-entropy of softmax_g(q_t · c_g) over the candidate chunks g
(those LongHeads chooses among: 1 .. t//w - 2) against the model's own full-attention mass on
those chunks (normalised over the candidates, detached).  c_g is exactly the representation of
kernels/longheads.c: chunk queries and keys rotated by local positions, bidirectional attention
inside the chunk, s = mean of the outputs, c = sum_j softmax_j(s·k_j/sqrt(d)) k_j; q_t is the
un-rotated query.  The loss only teaches the tiny model the query/chunk correlation that large
pretrained models already have; LongHeads at inference stays training-free.
"""
import argparse
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_writer import GGUFWriter, read_gguf  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The prompt (the paper's passkey test, as text)
# ---------------------------------------------------------------------------------------------
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
         "memorize it. I will quiz you about the important information there.")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
FILLER_SENTS = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                "There and back again."]
QUESTION = "What is the pass key? The pass key is"


def passkey_line(key):
    return "The pass key is %s. Remember it. %s is the pass key." % (key, key)


def answer_text(key):
    return " %s." % key


# Varied filler for half of the training samples: same style, other words.
NOUNS = ["grass", "sky", "sun", "sea", "tree", "moon", "road", "house", "river", "snow", "cloud",
         "bird", "star", "rain", "stone", "leaf", "field", "hill", "lake", "door"]
ADJS = ["green", "blue", "yellow", "red", "white", "black", "big", "small", "cold", "warm", "old",
        "new", "bright", "dark", "tall", "long", "soft", "quiet"]
PLACES = ["home", "back", "away", "there", "out"]


def varied_sentence(rng):
    r = rng.random()
    if r < 0.55:
        return "The %s is %s." % (rng.choice(NOUNS), rng.choice(ADJS))
    if r < 0.65:
        return rng.choice(FILLER_SENTS)
    if r < 0.75:
        return "A %s is %s." % (rng.choice(NOUNS), rng.choice(ADJS))
    if r < 0.85:
        return "We go %s." % rng.choice(PLACES)
    if r < 0.93:
        return "It is %s and %s." % (rng.choice(ADJS), rng.choice(ADJS))
    return "Here we go again."


# ---------------------------------------------------------------------------------------------
# Vocabulary: SentencePiece-style, llama.cpp "llama" (SPM) tokenizer semantics
# ---------------------------------------------------------------------------------------------
SPACE = "\u2581"
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_BYTE = 1, 2, 3, 6
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


def all_words():
    text = " ".join([INTRO, FILLER, passkey_line("0"), QUESTION] +
                    ["The %s is %s. A" % (n, a) for n in NOUNS for a in ADJS] +
                    ["We go %s." % p for p in PLACES] + ["It is and again."])
    words = set()
    for w in text.split():
        w = w.strip(".?")
        if w and not w.isdigit():
            words.add(w)
    return sorted(words)


def build_vocab():
    """pieces, scores, types.  Layout: <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, single
    characters (U+2581 and printable ASCII), then for every word W the pieces '▁'+W[:i],
    i = 1..len(W): each word is reachable by merging one character at a time, and a longer piece
    always scores higher, so a word always ends up as one piece.  No piece glues U+2581 to a digit
    or any multi-character piece contains a digit: ' 12345' is '▁' '1' '2' '3' '4' '5'."""
    pieces = ["<unk>", "<s>", "</s>"]
    types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL]
    for b in range(256):
        pieces.append("<0x%02X>" % b)
        types.append(TT_BYTE)
    seen = set()
    singles = [SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    for ch in singles:
        pieces.append(ch)
        types.append(TT_NORMAL)
        seen.add(ch)
    for w in all_words():
        for i in range(1, len(w) + 1):
            p = SPACE + w[:i]
            if p not in seen:
                seen.add(p)
                pieces.append(p)
                types.append(TT_NORMAL)
    scores = []
    for p, t in zip(pieces, types):
        scores.append(float(len(p)) if t == TT_NORMAL and len(p) > 1 else 0.0)
    return pieces, scores, types


class Tokenizer:
    """Pure-Python implementation of the encoder that engine/tokenizer.c implements: dummy prefix
    space, ' ' -> U+2581, UTF-8 characters, repeatedly merge the adjacent pair whose concatenation
    is a NORMAL piece with the highest score (leftmost on ties), byte fallback for the rest."""

    def __init__(self, pieces, scores, types):
        self.pieces, self.scores, self.types = pieces, scores, types
        self.normal = {p: i for i, p in enumerate(pieces) if types[i] == TT_NORMAL}
        self.cache = {}

    def encode_exact(self, text, add_bos=True, add_space_prefix=True):
        s = text.replace(" ", SPACE)
        if add_space_prefix:
            s = SPACE + s
        syms = list(s)
        while True:
            best, best_i = None, -1
            for i in range(len(syms) - 1):
                m = syms[i] + syms[i + 1]
                j = self.normal.get(m)
                if j is not None and (best is None or self.scores[j] > best):
                    best, best_i = self.scores[j], i
            if best is None:
                break
            syms[best_i:best_i + 2] = [syms[best_i] + syms[best_i + 1]]
        ids = [BOS_ID] if add_bos else []
        for sym in syms:
            j = self.normal.get(sym)
            if j is not None:
                ids.append(j)
            else:
                ids.extend(3 + b for b in sym.encode("utf-8"))
        return ids

    def encode(self, text, add_bos=True):
        """Fast path with the same result: no piece contains U+2581 except at its start, so no
        merge crosses a space; encode space-led words separately (memoised).  Checked against
        encode_exact by `tokens`."""
        ids = [BOS_ID] if add_bos else []
        for k, word in enumerate(text.split(" ")):
            piece = (" " if k > 0 else "") + word
            r = self.cache.get(piece)
            if r is None:
                r = self.encode_exact(piece, add_bos=False, add_space_prefix=(k == 0))
                self.cache[piece] = r
            ids.extend(r)
        return ids

    def _cont(self, text):
        """Tokens of text that continues a sequence (text starts with a space)."""
        ids = []
        for word in text[1:].split(" "):
            piece = " " + word
            r = self.cache.get(piece)
            if r is None:
                r = self.encode_exact(piece, add_bos=False, add_space_prefix=False)
                self.cache[piece] = r
            ids.extend(r)
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t = self.types[i]
            if t == TT_BYTE:
                out.append(int(self.pieces[i][3:5], 16))
            elif t == TT_NORMAL:
                out += self.pieces[i].replace(SPACE, " ").encode("utf-8")
        return out.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------
def random_key(rng):
    return "%05d" % rng.randrange(0, 100000)


def build_prompt(tok, rng, n_tokens, key=None, depth=None, varied=False, cut=False):
    """A passkey prompt of at most n_tokens tokens (BOS included, answer excluded).  Filler is
    whole sentences (the canonical five in order, or varied ones); the pass-key line goes between
    sentences at relative depth `depth` in [0, 1] (random if None).  cut: fill the last few
    tokens with the start of one more sentence.  Returns (prompt ids, key, text)."""
    key = key if key is not None else random_key(rng)
    head = tok.encode(INTRO)
    pk = tok._cont(" " + passkey_line(key))
    q = tok._cont(" " + QUESTION)
    budget = n_tokens - len(head) - len(pk) - len(q)
    block = FILLER_SENTS
    if varied == "block":     # a random block of sentences, repeated like the canonical filler
        block = [varied_sentence(rng) for _ in range(rng.randint(3, 6))]
    sents, lens, used, i = [], [], 0, 0
    while True:
        s = varied_sentence(rng) if varied is True else block[i % len(block)]
        n = len(tok._cont(" " + s))
        if used + n > budget:
            break
        sents.append(s)
        lens.append(n)
        used += n
        i += 1
    if cut and budget - used > 0:
        s = varied_sentence(rng) if varied is True else block[i % len(block)]
        ids = tok._cont(" " + s)[:budget - used]
        if len(ids) > 1:
            sents.append(tok.decode(ids)[1:])
    if depth is None:
        at = rng.randint(0, len(sents))
    else:
        at = int(round(depth * len(sents)))
    parts = [INTRO] + sents[:at] + [passkey_line(key)] + sents[at:] + [QUESTION]
    text = " ".join(parts)
    ids = tok.encode(text)
    return ids, key, text


def make_batch(tok, rng, batch, seq_len, ans_weight, short=False):
    """inputs/targets (batch, seq_len) and per-target weights; samples are <= seq_len + 1 tokens
    (prompt + answer), padded with weight 0.  short: curriculum samples of 70..seq_len+1 tokens
    (the batch is cut to its longest sample)."""
    X = np.zeros((batch, seq_len), dtype=np.int64)
    Y = np.zeros((batch, seq_len), dtype=np.int64)
    W = np.zeros((batch, seq_len), dtype=np.float32)
    A = np.zeros((batch, seq_len), dtype=np.float32)   # answer-token mask (for accuracy)
    for b in range(batch):
        full = seq_len + 1
        if short:
            n = rng.randint(70, full)
        else:
            n = full if rng.random() < 0.5 else rng.randint(90, full)
        key = random_key(rng)
        ans = tok._cont(answer_text(key))          # '▁' d d d d d '.'
        r = rng.random()   # filler: 1/2 canonical, 1/4 a random repeated block, 1/4 random
        varied = False if r < 0.5 else ("block" if r < 0.75 else True)
        ids, _, _ = build_prompt(tok, rng, n - len(ans) - 1, key=key, varied=varied,
                                 cut=rng.random() < 0.3)
        seq = ids + ans + [EOS_ID]
        L = len(seq) - 1
        X[b, :L] = seq[:-1]
        Y[b, :L] = seq[1:]
        W[b, :L] = 1.0
        a0 = len(ids) - 1                          # target index of the first answer token
        W[b, a0:a0 + 6] = ans_weight
        A[b, a0:a0 + 6] = 1.0
    n = int((W > 0).sum(1).max()) if short else seq_len
    return tuple(torch.from_numpy(a[:, :n].copy()) for a in (X, Y, W, A))


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def rope_cs(positions, head_dim, theta):
    """cos, sin of shape (len(positions), head_dim/2) for the adjacent-pair layout."""
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope(x, cos, sin):
    """x (..., T, D) rotated by pairs (2i, 2i+1); cos/sin broadcastable to (..., T, D/2)."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    r0 = x0 * cos - x1 * sin
    r1 = x0 * sin + x1 * cos
    return torch.stack((r0, r1), dim=-1).flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, H, Hkv, hd, ff = cfg["dim"], cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"], cfg["ffn"]
        self.attn_norm = RMSNorm(d, cfg["eps"])
        self.wq = nn.Linear(d, H * hd, bias=False)
        self.wk = nn.Linear(d, Hkv * hd, bias=False)
        self.wv = nn.Linear(d, Hkv * hd, bias=False)
        self.wo = nn.Linear(H * hd, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg["eps"])
        self.w_gate = nn.Linear(d, ff, bias=False)
        self.w_up = nn.Linear(d, ff, bias=False)
        self.w_down = nn.Linear(ff, d, bias=False)
        self.H, self.Hkv, self.hd = H, Hkv, hd

    def qkv(self, x):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.wk(h).view(B, T, self.Hkv, self.hd).transpose(1, 2)
        v = self.wv(h).view(B, T, self.Hkv, self.hd).transpose(1, 2)
        if self.Hkv != self.H:
            r = self.H // self.Hkv
            k = k.repeat_interleave(r, dim=1)
            v = v.repeat_interleave(r, dim=1)
        return q, k, v        # un-rotated, (B, H, T, hd)

    def finish(self, x, o):
        B, H, T, hd = o.shape
        x = x + self.wo(o.transpose(1, 2).reshape(B, T, H * hd))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg["n_vocab"], cfg["dim"])
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])])
        self.norm = RMSNorm(cfg["dim"], cfg["eps"])
        self.out = nn.Linear(cfg["dim"], cfg["n_vocab"], bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for b in self.blocks:   # scaled residual projections (GPT-2 style)
            nn.init.normal_(b.wo.weight, std=0.02 / math.sqrt(2 * cfg["n_layer"]))
            nn.init.normal_(b.w_down.weight, std=0.02 / math.sqrt(2 * cfg["n_layer"]))

    def forward(self, idx, attn="full", align=None, valid=None):
        """attn: 'full' (causal, absolute positions) or a callable(layer, q, k, v) -> o.
        align: None or (w, temperature): also return the mean selection-alignment loss."""
        cfg = self.cfg
        B, T = idx.shape
        x = self.tok_emb(idx)
        cos, sin = rope_cs(torch.arange(T), cfg["head_dim"], cfg["rope_theta"])
        mask = torch.full((T, T), float("-inf")).triu(1)
        al_sum, al_n = 0.0, 0
        for li, blk in enumerate(self.blocks):
            q, k, v = blk.qkv(x)
            if attn == "full":
                qr, kr = rope(q, cos, sin), rope(k, cos, sin)
                P = torch.softmax((qr * (1.0 / math.sqrt(blk.hd))) @ kr.transpose(-1, -2) + mask,
                                  dim=-1)
                o = P @ v
                if align is not None:
                    s, n = align_loss(q, k, v, P, align[0], align[1], cfg, valid)
                    al_sum, al_n = al_sum + s, al_n + n
            else:
                o = attn(li, q, k, v)
            x = blk.finish(x, o)
        logits = self.out(self.norm(x))
        if align is not None:
            return logits, al_sum / max(al_n, 1)
        return logits


def chunk_reps(q, k, v, w, theta):
    """LongHeads chunk representations (kernels/longheads.c build_rep) for every complete chunk:
    q, k, v (B, H, T, D) un-rotated, T a multiple of w.  Returns c (B, H, T/w, D)."""
    B, H, T, D = q.shape
    G = T // w
    cos, sin = rope_cs(torch.arange(w), D, theta)
    qc = rope(q.reshape(B, H, G, w, D), cos, sin)
    kc = rope(k.reshape(B, H, G, w, D), cos, sin)
    vc = v.reshape(B, H, G, w, D)
    A = torch.softmax(qc @ kc.transpose(-1, -2) / math.sqrt(D), dim=-1)     # bidirectional
    s = (A @ vc).mean(dim=-2)                                               # (B, H, G, D)
    a = torch.softmax((kc @ s.unsqueeze(-1)).squeeze(-1) / math.sqrt(D), dim=-1)  # (B, H, G, w)
    return (a.unsqueeze(-1) * kc).sum(dim=-2)


def align_loss(q, k, v, P, w, temp, cfg, valid):
    """Sum over (batch, head, query) rows of CE(target, softmax(q·c / temp)) over the candidate
    chunks 1 .. t//w-2, target = full-attention mass P on those chunks renormalised, detached.
    Only rows with >= 2 candidates and a valid query count.  Returns (sum, count)."""
    B, H, T, D = q.shape
    Tw = (T // w) * w
    G = Tw // w
    c = chunk_reps(q[:, :, :Tw], k[:, :, :Tw], v[:, :, :Tw], w, cfg["rope_theta"])
    scores = (q @ c.transpose(-1, -2)) / temp                               # (B, H, T, G)
    t = torch.arange(T)
    g = torch.arange(G)
    cand = (g[None, :] >= 1) & (g[None, :] <= (t // w)[:, None] - 2)         # (T, G)
    rows = cand.sum(-1) >= 2                                                # (T,)
    mass = P[:, :, :, :Tw].reshape(B, H, T, G, w).sum(-1).detach()
    mass = mass.masked_fill(~cand, 0.0)
    target = mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(scores.masked_fill(~cand, float("-inf")), dim=-1)
    logp = logp.masked_fill(~cand, 0.0)
    ce = -(target * logp).sum(-1)                                           # (B, H, T)
    m = rows[None, None, :].expand(B, H, T)
    if valid is not None:
        m = m & valid[:, None, :]
    return (ce * m).sum(), int(m.sum())


# ---------------------------------------------------------------------------------------------
# LongHeads attention (Python reference, for the sanity checks; the real one is C)
# ---------------------------------------------------------------------------------------------
def make_longheads(cfg, w, L, force_chunk=None):
    """Returns attn(layer, q, k, v) for batch 1 implementing kernels/longheads.c: queries t < L
    ordinary causal attention; t >= L: per head chunk 0, the previous and the current chunk plus
    the K-3 complete chunks 1..cc-2 with the highest q·c (ties to the earlier), laid out
    contiguously (positions 0..), the query at (K-1)*w + t mod w.  force_chunk: a chunk id that
    replaces the lowest-scoring selected one in every head (diagnostic)."""
    K = L // w
    theta = cfg["rope_theta"]
    stats = {"hit": 0, "rows": 0}

    def attn(layer, q, k, v):
        B, H, T, D = q.shape
        assert B == 1
        out = torch.empty_like(q)
        n0 = min(T, L)
        cos, sin = rope_cs(torch.arange(n0), D, theta)
        qr, kr = rope(q[:, :, :n0], cos, sin), rope(k[:, :, :n0], cos, sin)
        mask = torch.full((n0, n0), float("-inf")).triu(1)
        out[:, :, :n0] = torch.softmax(qr @ kr.transpose(-1, -2) / math.sqrt(D) + mask, -1) @ v[:, :, :n0]
        if T <= L:
            return out
        G = T // w
        c = chunk_reps(q[:, :, :G * w], k[:, :, :G * w], v[:, :, :G * w], w, theta)[0]  # (H,G,D)
        cosl, sinl = rope_cs(torch.arange(T) % w, D, theta)
        kloc = rope(k, cosl, sinl)                                   # the cache's layout
        for t0 in range(L, T, 256):
            t1 = min(T, t0 + 256)
            tt = torch.arange(t0, t1)
            cc = tt // w
            qb = q[0, :, t0:t1]                                      # (H, n, D)
            sc = qb @ c.transpose(-1, -2)                            # (H, n, G)
            gg = torch.arange(G)
            cand = (gg[None, :] >= 1) & (gg[None, :] <= cc[:, None] - 2)
            # top K-3; ties to the earlier chunk: subtract a tiny rank-preserving epsilon
            sc = sc - gg.float()[None, None, :] * 1e-9 * sc.abs().clamp_min(1.0)
            sc = sc.masked_fill(~cand[None], float("-inf"))
            top = sc.topk(K - 3, dim=-1).indices                     # (H, n, K-3)
            if force_chunk is not None:
                fc = torch.full_like(top[..., :1], force_chunk)
                has = (top == force_chunk).any(-1, keepdim=True)
                top = torch.where(has, top, torch.cat([top[..., :-1], fc], -1))
            top, _ = top.sort(dim=-1)
            n = t1 - t0
            sel = torch.cat([torch.zeros(H, n, 1, dtype=torch.long), top,
                             (cc - 1)[None, :, None].expand(H, n, 1),
                             cc[None, :, None].expand(H, n, 1)], dim=-1)   # (H, n, K)
            idx = (sel[..., None] * w + torch.arange(w)).reshape(H, n, K * w)
            hi = torch.arange(H)[:, None, None]
            gi = idx.clamp_max(T - 1)                                # masked below
            kg = kloc[0][hi, gi].view(H, n, K, w, D)                 # keys at local rotation
            vg = v[0][hi, gi]
            # RoPE is relative: rotate the query by P - r*w for slot r instead of every key
            P = (K - 1) * w + tt % w                                 # query layout positions
            rel = P[:, None] - torch.arange(K)[None, :] * w          # (n, K)
            cq, sq = rope_cs(rel.reshape(-1), D, theta)
            qrot = rope(qb[:, :, None, :].expand(H, n, K, D).reshape(H, n * K, D), cq, sq)
            s = (kg @ qrot.view(H, n, K, D, 1)).reshape(H, n, K * w) / math.sqrt(D)
            s = s.masked_fill(idx > tt[None, :, None], float("-inf"))
            out[0, :, t0:t1] = (torch.softmax(s, -1)[:, :, None, :] @ vg).squeeze(-2)
            stats["rows"] += H * n
            stats["sel"] = sel
        return out

    attn.stats = stats
    return attn


# ---------------------------------------------------------------------------------------------
# GGUF export / import
# ---------------------------------------------------------------------------------------------
def export_gguf(model, vocab, path, name, description):
    cfg = model.cfg
    pieces, scores, types = vocab
    g = GGUFWriter(alignment=32)
    g.add_str("general.architecture", "llama")
    g.add_str("general.name", name)
    g.add_str("general.description", description)
    g.add_u32("general.file_type", 0)
    g.add_u32("llama.context_length", cfg["ctx"])
    g.add_u32("llama.embedding_length", cfg["dim"])
    g.add_u32("llama.feed_forward_length", cfg["ffn"])
    g.add_u32("llama.block_count", cfg["n_layer"])
    g.add_u32("llama.attention.head_count", cfg["n_head"])
    g.add_u32("llama.attention.head_count_kv", cfg["n_head_kv"])
    g.add_u32("llama.rope.dimension_count", cfg["head_dim"])
    g.add_f32("llama.rope.freq_base", cfg["rope_theta"])
    g.add_f32("llama.attention.layer_norm_rms_epsilon", cfg["eps"])
    g.add_u32("llama.vocab_size", cfg["n_vocab"])
    g.add_u32("longheads.chunk_size", cfg["chunk"])
    g.add_u32("longheads.window", cfg["window"])
    g.add_str("tokenizer.ggml.model", "llama")
    g.add_arr_str("tokenizer.ggml.tokens", pieces)
    g.add_arr_f32("tokenizer.ggml.scores", scores)
    g.add_arr_i32("tokenizer.ggml.token_type", types)
    g.add_u32("tokenizer.ggml.bos_token_id", BOS_ID)
    g.add_u32("tokenizer.ggml.eos_token_id", EOS_ID)
    g.add_u32("tokenizer.ggml.unknown_token_id", UNK_ID)
    g.add_bool("tokenizer.ggml.add_bos_token", True)
    g.add_bool("tokenizer.ggml.add_eos_token", False)
    g.add_bool("tokenizer.ggml.add_space_prefix", True)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    g.add_tensor_f32("token_embd.weight", sd["tok_emb.weight"])
    for i in range(cfg["n_layer"]):
        p = "blocks.%d." % i
        for gname, tname in [("attn_norm", "attn_norm.weight"), ("attn_q", "wq.weight"),
                             ("attn_k", "wk.weight"), ("attn_v", "wv.weight"),
                             ("attn_output", "wo.weight"), ("ffn_norm", "ffn_norm.weight"),
                             ("ffn_gate", "w_gate.weight"), ("ffn_up", "w_up.weight"),
                             ("ffn_down", "w_down.weight")]:
            g.add_tensor_f32("blk.%d.%s.weight" % (i, gname), sd[p + tname])
    g.add_tensor_f32("output_norm.weight", sd["norm.weight"])
    g.add_tensor_f32("output.weight", sd["out.weight"])
    return g.write(path)


def load_gguf(path):
    kv, t = read_gguf(path)
    cfg = default_cfg(len(kv["tokenizer.ggml.tokens"]))
    cfg.update(dim=kv["llama.embedding_length"], ffn=kv["llama.feed_forward_length"],
               n_layer=kv["llama.block_count"], n_head=kv["llama.attention.head_count"],
               n_head_kv=kv["llama.attention.head_count_kv"], ctx=kv["llama.context_length"],
               rope_theta=kv["llama.rope.freq_base"],
               eps=kv["llama.attention.layer_norm_rms_epsilon"])
    cfg["head_dim"] = cfg["dim"] // cfg["n_head"]
    model = Llama(cfg)
    sd = {"tok_emb.weight": t["token_embd.weight"][1], "norm.weight": t["output_norm.weight"][1],
          "out.weight": t["output.weight"][1]}
    for i in range(cfg["n_layer"]):
        for gname, tname in [("attn_norm", "attn_norm.weight"), ("attn_q", "wq.weight"),
                             ("attn_k", "wk.weight"), ("attn_v", "wv.weight"),
                             ("attn_output", "wo.weight"), ("ffn_norm", "ffn_norm.weight"),
                             ("ffn_gate", "w_gate.weight"), ("ffn_up", "w_up.weight"),
                             ("ffn_down", "w_down.weight")]:
            sd["blocks.%d.%s" % (i, tname)] = t["blk.%d.%s.weight" % (i, gname)][1]
    model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in sd.items()})
    vocab = (kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.scores"],
             kv["tokenizer.ggml.token_type"])
    return model, vocab


def default_cfg(n_vocab):
    return dict(n_vocab=n_vocab, dim=128, n_layer=4, n_head=4, n_head_kv=4, head_dim=32,
                ffn=352, eps=1e-5, rope_theta=10000.0, ctx=256, chunk=32, window=256)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def passkey_eval(model, tok, n_tokens, n, mode, seed, w=32, L=256, force=False):
    """Exact-match rate of the 5-digit key.  Teacher-forced argmax over ' ' + 5 digits equals
    greedy decoding of those 6 tokens (the greedy path follows the answer while every argmax is
    right, and both LongHeads and full attention are causal).  Depths evenly spread."""
    rng = random.Random(seed)
    hits = 0
    for i in range(n):
        depth = (i + 0.5) / n
        key = random_key(rng)
        ids, _, _ = build_prompt(tok, rng, n_tokens, key=key, depth=depth)
        ans = tok._cont(" " + key)
        seq = torch.tensor([ids + ans])
        if mode == "full":
            logits = model(seq)
        else:
            fc = None
            if force:   # the chunk holding the first copy of the key's first digit
                fc = key_index(ids, ans[1:]) // w
            logits = model(seq, attn=make_longheads(model.cfg, w, L, force_chunk=fc))
        pred = logits[0, len(ids) - 1:len(ids) - 1 + len(ans)].argmax(-1).tolist()
        hits += pred == ans
    return hits, n


def key_index(ids, digits):
    """Position of the first copy of the key digits in the prompt (forced-chunk diagnostic)."""
    for i in range(len(ids) - len(digits)):
        if ids[i:i + len(digits)] == digits:
            return i
    raise ValueError("key not found")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def cmd_tokens(args):
    vocab = build_vocab()
    tok = Tokenizer(*vocab)
    print("vocabulary: %d pieces (%d word pieces)" % (len(vocab[0]), len(vocab[0]) - 3 - 256 - 95))
    rng = random.Random(0)
    # the fast encoder must equal the exact algorithm
    for i in range(40):
        ids, key, text = build_prompt(tok, rng, rng.randint(60, 400), varied=i % 2 == 1, cut=i % 3 == 0)
        assert tok.encode_exact(text) == ids, text
        assert tok.decode(ids[1:]) == " " + text
    for s in ["Hello, world! ünïcödé 12345 \x01\ttabs", "The pass key is 00042.", "  two  spaces"]:
        assert tok.encode_exact(s) == tok.encode(s), s
        assert tok.decode(tok.encode(s)[1:]) == " " + s
    for part in [INTRO, FILLER, passkey_line("12345"), QUESTION + answer_text("12345")]:
        ids = tok.encode(part)
        print(" ".join("%s(%d)" % (vocab[0][i], i) for i in ids))
    if args.vectors:
        with open(args.vectors, "w") as f:
            rng = random.Random(1)
            for i in range(args.n_vectors):
                ids, key, text = build_prompt(tok, rng, rng.randint(60, 600), varied=i % 2 == 1)
                f.write(text + "\t" + " ".join(map(str, ids)) + "\n")
            for s in ["Hello, world! \u00fcn\u00efc\u00f6d\u00e9 12345 tabs\tand\x01ctl",
                      "The pass key is 00042. Remember it. 00042 is the pass key.", "  two  spaces",
                      "grassy skyline sunny", "x"]:
                f.write(s.replace("\t", "\\t") + "\t" + " ".join(map(str, tok.encode(s))) + "\n")
        print("wrote", args.vectors)


def cmd_train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    vocab = build_vocab()
    tok = Tokenizer(*vocab)
    if args.init:
        model, v2 = load_gguf(args.init)
        assert list(v2[0]) == vocab[0], "vocabulary of --init differs"
    else:
        model = Llama(default_cfg(len(vocab[0])))
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    print("params %d (%.3fM), vocab %d" % (n_params, n_params / 1e6, cfg["n_vocab"]), flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    t_start = time.time()
    ema = None
    for step in range(1, args.steps + 1):
        # linear warm-up, constant, cosine decay to 10% over the last `decay` fraction
        lr = args.lr * min(1.0, step / args.warmup)
        d0 = int(args.steps * (1 - args.decay))
        if step > max(d0, args.warmup):
            prog = (step - max(d0, args.warmup)) / max(1, args.steps - max(d0, args.warmup))
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        if step <= args.curriculum:   # short prompts first: retrieval is found sooner there
            X, Y, W, A = make_batch(tok, rng, args.batch, args.curriculum_len, args.ans_weight,
                                    short=True)
        else:
            X, Y, W, A = make_batch(tok, rng, args.batch, cfg["ctx"], args.ans_weight)
        if args.align:
            logits, al = model(X, align=(args.chunk, args.align_temp), valid=W > 0)
        else:
            logits, al = model(X), torch.tensor(0.0)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Y.reshape(-1), reduction="none")
        lm = (ce * W.reshape(-1)).sum() / W.sum()
        loss = lm + args.align_weight * al if args.align else lm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            pred = logits.argmax(-1)
            ok = ((pred == Y) | (A == 0)).all(-1).float().mean().item()
            ans_ce = ((ce.view_as(W) * A).sum() / A.sum()).item()
        cur = np.array([lm.item(), float(al), ans_ce, ok])
        ema = cur if ema is None else 0.95 * ema + 0.05 * cur
        if step % args.log_every == 0 or step == args.steps:
            print("step %5d  lr %.2e  lm %.4f  align %.4f  answer-ce %.4f  batch-acc %.2f  "
                  "(ema lm %.4f align %.4f acc %.3f)  %.0fs"
                  % (step, lr, cur[0], cur[1], cur[2], cur[3], ema[0], ema[1], ema[3],
                     time.time() - t_start), flush=True)
        if args.minutes and time.time() - t_start > args.minutes * 60:
            print("time limit reached at step %d" % step, flush=True)
            break
    elapsed = time.time() - t_start
    model.eval()
    desc = ("passkey %s model (tools/train/train_passkey.py, seed %d, %d steps, %.0f s): %s"
            % ("aligned" if args.align else "plain", args.seed, step, elapsed, args.note))
    size = export_gguf(model, vocab, args.out, os.path.basename(args.out).replace(".gguf", ""), desc)
    print("wrote %s (%d bytes) after %.1f s; final lm %.4f align %.4f (ema %.4f / %.4f)"
          % (args.out, size, elapsed, cur[0], cur[1], ema[0], ema[1]), flush=True)
    # round trip
    m2, _ = load_gguf(args.out)
    X, Y, W, A = make_batch(tok, random.Random(123), 4, cfg["ctx"], 1.0)
    with torch.no_grad():
        d = (m2(X) - model(X)).abs().max().item()
    print("gguf round-trip max |dlogit| = %.2e" % d, flush=True)


def cmd_eval(args):
    torch.set_num_threads(args.threads)
    model, vocab = load_gguf(args.model)
    model.eval()
    tok = Tokenizer(*vocab)
    for n_tokens in [int(x) for x in args.lengths.split(",")]:
        for mode in args.modes.split(","):
            t0 = time.time()
            if mode == "lh-force":
                h, n = passkey_eval(model, tok, n_tokens, args.n, "lh", args.seed, force=True)
            else:
                h, n = passkey_eval(model, tok, n_tokens, args.n, mode, args.seed)
            print("%s  len %6d  %-8s %3d/%d  (%.0fs)" % (os.path.basename(args.model), n_tokens,
                                                          mode, h, n, time.time() - t0), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("tokens", help="print the vocabulary/skeleton tokenization, self-check")
    a.add_argument("--vectors", help="write 'text<TAB>ids' test lines for the C tokenizer")
    a.add_argument("--n-vectors", type=int, default=20)
    a = sub.add_parser("train")
    a.add_argument("--out", required=True)
    a.add_argument("--init", help="start from this GGUF (fine-tune)")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--steps", type=int, default=1500)
    a.add_argument("--minutes", type=float, default=0, help="stop early after this long")
    a.add_argument("--batch", type=int, default=32)
    a.add_argument("--lr", type=float, default=3e-3)
    a.add_argument("--wd", type=float, default=0.1)
    a.add_argument("--warmup", type=int, default=30)
    a.add_argument("--decay", type=float, default=0.25, help="final fraction with cosine decay")
    a.add_argument("--ans-weight", type=float, default=5.0)
    a.add_argument("--curriculum", type=int, default=0, help="steps of short prompts first")
    a.add_argument("--curriculum-len", type=int, default=128)
    a.add_argument("--align", action="store_true", help="add the selection-alignment loss")
    a.add_argument("--align-weight", type=float, default=1.0)
    a.add_argument("--align-temp", type=float, default=1.0, help="scores are q·c / temp")
    a.add_argument("--chunk", type=int, default=32)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--log-every", type=int, default=50)
    a.add_argument("--note", default="")
    a = sub.add_parser("eval")
    a.add_argument("--model", required=True)
    a.add_argument("--lengths", default="256,2048")
    a.add_argument("--modes", default="full,lh")
    a.add_argument("--n", type=int, default=20)
    a.add_argument("--seed", type=int, default=7)
    a.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    {"tokens": cmd_tokens, "train": cmd_train, "eval": cmd_eval}[args.cmd](args)


if __name__ == "__main__":
    main()
