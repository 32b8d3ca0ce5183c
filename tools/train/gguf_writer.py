"""tools/train/gguf_writer.py — the project's own minimal GGUF v3 writer (pure Python + numpy).

Written from the GGUF layout as engine/gguf.h reads it (little-endian throughout):

    u32 magic "GGUF" | u32 version (3) | u64 n_tensors | u64 n_kv
    n_kv times:      string key | u32 value type | value
    n_tensors times: string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset
    zero padding to `alignment`, then the tensor data; every offset is relative to the start of
    the data section and a multiple of `alignment`.

    string = u64 byte length + UTF-8 bytes (no NUL);  array = u32 element type + u64 count +
    elements.  ne[0] is the fastest-moving dimension: a PyTorch Linear weight (out, in) stored
    row-major as it is has ne = [in, out].

Only what the passkey models need: scalar u32/i32/f32/bool/string KVs, arrays of strings,
f32 and i32, and F32 tensors.  general.alignment is written (32) so readers need not assume it.
"""
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3

# KV value types (engine/gguf.h lh_gguf_vtype)
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, \
    T_UINT64, T_INT64, T_FLOAT64 = range(13)

# ggml tensor types we write
GGML_TYPE_F32 = 0


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


class GGUFWriter:
    def __init__(self, alignment=32):
        self.alignment = alignment
        self.kv = []          # (key, encoded type+value bytes)
        self.keys = set()
        self.tensors = []     # (name, ne tuple, float32 bytes)
        self.names = set()
        self.add_u32("general.alignment", alignment)

    # ---- key/values ----
    def _add(self, key, payload):
        if key in self.keys:
            raise ValueError("duplicate GGUF key %r" % key)
        self.keys.add(key)
        self.kv.append((key, payload))

    def add_u32(self, key, v):
        self._add(key, struct.pack("<I", T_UINT32) + struct.pack("<I", int(v)))

    def add_i32(self, key, v):
        self._add(key, struct.pack("<I", T_INT32) + struct.pack("<i", int(v)))

    def add_f32(self, key, v):
        self._add(key, struct.pack("<I", T_FLOAT32) + struct.pack("<f", float(v)))

    def add_bool(self, key, v):
        self._add(key, struct.pack("<I", T_BOOL) + struct.pack("<B", 1 if v else 0))

    def add_str(self, key, v):
        self._add(key, struct.pack("<I", T_STRING) + _str(v))

    def add_arr_str(self, key, vals):
        body = b"".join(_str(v) for v in vals)
        self._add(key, struct.pack("<IIQ", T_ARRAY, T_STRING, len(vals)) + body)

    def add_arr_f32(self, key, vals):
        a = np.asarray(vals, dtype="<f4")
        self._add(key, struct.pack("<IIQ", T_ARRAY, T_FLOAT32, a.size) + a.tobytes())

    def add_arr_i32(self, key, vals):
        a = np.asarray(vals, dtype="<i4")
        self._add(key, struct.pack("<IIQ", T_ARRAY, T_INT32, a.size) + a.tobytes())

    # ---- tensors ----
    def add_tensor_f32(self, name, array):
        """array: numpy, C order; its numpy shape (d_{n-1}, ..., d_0) becomes ne = [d_0, ...]."""
        if name in self.names:
            raise ValueError("duplicate tensor %r" % name)
        a = np.ascontiguousarray(array, dtype="<f4")
        if a.ndim < 1 or a.ndim > 4:
            raise ValueError("tensor %r: %d dims" % (name, a.ndim))
        self.names.add(name)
        self.tensors.append((name, tuple(reversed(a.shape)), a.tobytes()))

    # ---- output ----
    def _pad(self, n):
        return (-n) % self.alignment

    def to_bytes(self):
        out = bytearray()
        out += GGUF_MAGIC
        out += struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))
        for key, payload in self.kv:
            out += _str(key) + payload
        offset = 0
        offsets = []
        for name, ne, data in self.tensors:
            offsets.append(offset)
            out += _str(name) + struct.pack("<I", len(ne))
            out += b"".join(struct.pack("<Q", d) for d in ne)
            out += struct.pack("<IQ", GGML_TYPE_F32, offset)
            offset += len(data) + self._pad(len(data))
        out += b"\0" * self._pad(len(out))
        data_start = len(out)
        for (name, ne, data), off in zip(self.tensors, offsets):
            assert len(out) - data_start == off
            out += data
            out += b"\0" * self._pad(len(data))
        return bytes(out)

    def write(self, path):
        b = self.to_bytes()
        with open(path, "wb") as f:
            f.write(b)
        return len(b)


def read_gguf(path):
    """A small reader for round-trip checks: returns (kv dict, {name: (ne, np.float32 array)})."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    def rstr():
        nonlocal pos
        (n,) = take("<Q")
        s = buf[pos:pos + n].decode("utf-8")
        pos += n
        return s

    scalar = {T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I",
              T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<B", T_UINT64: "<Q", T_INT64: "<q",
              T_FLOAT64: "<d"}

    def rval(t):
        if t == T_STRING:
            return rstr()
        if t == T_ARRAY:
            et, n = take("<IQ")
            return [rval(et) for _ in range(n)]
        return take(scalar[t])[0]

    assert buf[:4] == GGUF_MAGIC
    pos = 4
    version, n_t, n_kv = take("<IQQ")
    assert version == 3
    kv = {}
    for _ in range(n_kv):
        k = rstr()
        (t,) = take("<I")
        kv[k] = rval(t)
    infos = []
    for _ in range(n_t):
        name = rstr()
        (nd,) = take("<I")
        ne = take("<%dQ" % nd)
        typ, off = take("<IQ")
        assert typ == GGML_TYPE_F32
        infos.append((name, ne, off))
    align = kv.get("general.alignment", 32)
    pos += (-pos) % align
    tensors = {}
    for name, ne, off in infos:
        n = int(np.prod(ne))
        a = np.frombuffer(buf, dtype="<f4", count=n, offset=pos + off)
        tensors[name] = (ne, a.reshape(tuple(reversed(ne))))
    return kv, tensors
