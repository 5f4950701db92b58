"""Writes the small hand-made GGUF seeds in fuzz/seeds/gguf and fuzz/seeds/gguf_tokenizer.

The committed fixtures (tests/fixtures/gguf) are ~200 KiB each, which makes libFuzzer slow;
these are a few hundred bytes to a few KiB: metadata of every value type (nested arrays
included), tensors of each converted type (F32, F16, BF16, Q8_0) with padding and alignment,
and byte-level BPE tokenizers with merges and control/user-defined token types, with no
tensors. Plain Python, no gguf package: the format is small (see src/gguf.rs).

    python3 fuzz/seeds/make_gguf_seeds.py
"""
import os
import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
       BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(val(et, i) for i in items)
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors=(), align=32, version=3):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + val(t, v)
    data, infos = b"", b""
    for name, ggml_type, ne, raw in tensors:
        data += b"\0" * ((-len(data)) % align)
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", ggml_type, len(data))
        data += raw
    out += infos
    out += b"\0" * ((-len(out)) % align)
    return out + data


def q8_0(values):
    """One Q8_0 block per 32 values: f16 scale, 32 int8."""
    out = b""
    for i in range(0, len(values), 32):
        blk = values[i:i + 32]
        d = max(abs(v) for v in blk) / 127 or 1.0
        out += struct.pack("<e", d) + bytes((round(v / d) & 0xFF) for v in blk)
    return out


here = os.path.dirname(os.path.abspath(__file__))


def write(target, name, b):
    with open(os.path.join(here, target, name), "wb") as f:
        f.write(b)


every_type = [
    ("t.u8", U8, 7), ("t.i8", I8, -7), ("t.u16", U16, 65535), ("t.i16", I16, -300),
    ("t.u32", U32, 1 << 31), ("t.i32", I32, -1), ("t.f32", F32, 0.5), ("t.bool", BOOL, 1),
    ("t.str", STR, "héllo"), ("t.u64", U64, 1 << 40), ("t.i64", I64, -(1 << 40)),
    ("t.f64", F64, 1e-300),
    ("t.arr.i32", ARR, (I32, [1, -2, 3])),
    ("t.arr.str", ARR, (STR, ["a", "", "ü"])),
    ("t.arr.nested", ARR, (ARR, [(U8, [1, 2]), (F32, [1.5])])),
    ("t.arr.empty", ARR, (F64, [])),
]
mamba = [
    ("general.architecture", STR, "mamba"), ("general.alignment", U32, 32),
    ("mamba.context_length", U32, 1 << 20), ("mamba.embedding_length", U32, 4),
    ("mamba.block_count", U32, 1), ("mamba.ssm.conv_kernel", U32, 4),
    ("mamba.ssm.inner_size", U32, 8), ("mamba.ssm.state_size", U32, 2),
    ("mamba.ssm.time_step_rank", U32, 1),
    ("mamba.attention.layer_norm_rms_epsilon", F32, 1e-5),
]
f32s = [0.25 * i - 1 for i in range(8)]
tensors = [
    ("token_embd.weight", 0, [4, 2], struct.pack("<8f", *f32s)),
    ("output_norm.weight", 1, [4], struct.pack("<4e", 1, 1, 1, 1)),
    ("blk.0.ssm_d", 30, [8], b"".join(struct.pack("<f", v)[2:] for v in f32s)),
    ("blk.0.ssm_in.weight", 8, [32, 1], q8_0([0.01 * i for i in range(32)])),
]
write("gguf", "every_value_type.gguf", gguf(every_type))
write("gguf", "tensors_every_dtype.gguf", gguf(mamba + every_type[:3], tensors))
write("gguf", "tensors_align64_v2.gguf",
      gguf([("general.alignment", U32, 64)] + mamba[2:], tensors[:2], align=64, version=2))
write("gguf", "empty.gguf", gguf([]))

letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", ",", "!", "H", "M"]
merges = ["t h", "th e", "Ġ t", "Ġt h", "Ġth e", "o w", "e r", "i n", "a n"]
vocab = ["<|endoftext|>", "<|pad|>"] + letters + ["th", "the", "Ġt", "Ġth", "Ġthe", "ow", "er", "in", "an", "<user>"]
types = [3, 3] + [1] * (len(vocab) - 3) + [4]
tok = [
    ("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "olmo"),
    ("tokenizer.ggml.tokens", ARR, (STR, vocab)),
    ("tokenizer.ggml.merges", ARR, (STR, merges)),
    ("tokenizer.ggml.token_type", ARR, (I32, types)),
    ("tokenizer.ggml.bos_token_id", U32, 0), ("tokenizer.ggml.eos_token_id", U32, 0),
]
write("gguf_tokenizer", "bpe.gguf", gguf(tok))
write("gguf_tokenizer", "bpe_no_types_no_pre.gguf", gguf([tok[0], tok[2], tok[3]]))
write("gguf_tokenizer", "bpe_with_model.gguf", gguf(mamba + tok, tensors[:2]))
write("gguf_tokenizer", "bytes_only.gguf",
      gguf([tok[0], ("tokenizer.ggml.tokens", ARR, (STR, [chr(c) for c in range(33, 127)]))]))
