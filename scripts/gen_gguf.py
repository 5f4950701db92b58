"""Write the GGUF test fixtures in tests/fixtures/gguf/ from the committed safetensors fixtures.

Each file is what llama.cpp's ``convert_hf_to_gguf.py`` (``MambaModel`` / ``Mamba2Model``) would
write for that checkpoint, produced with the ``gguf`` package from PyPI (the converter's own
writer, name map and quantizers), without torch or llama.cpp itself:

* metadata: ``general.architecture`` = mamba / mamba2, ``{arch}.context_length`` 2^20,
  ``embedding_length``, ``feed_forward_length`` 0, ``attention.head_count`` 0, ``block_count``,
  ``ssm.conv_kernel``, ``ssm.inner_size``, ``ssm.state_size``, ``ssm.time_step_rank`` (Mamba-2:
  d_inner / head_dim, the head count), ``ssm.group_count`` (Mamba-2), ``ssm.dt_b_c_rms`` false
  (Mamba-1), ``attention.layer_norm_rms_epsilon``, ``general.file_type``,
  ``general.quantization_version``. No key holds Mamba-2's ``time_step_limit``.
* tensors renamed through ``gguf.TensorNameMap`` (``token_embd``, ``blk.N.ssm_in`` ...;
  Mamba-2's ``dt_bias`` renamed to ``dt_proj.bias`` first, so it lands on ``ssm_dt.bias``);
  ``A_log`` stored as A = -exp(A_log); the conv weight squeezed to [C, K]; Mamba-2's A and D
  reshaped to [H, 1] and its norm to [n_groups, d_inner / n_groups]; a tied lm_head absent.
* types as the converter picks them: 1-D tensors, norms, the conv weight and every tensor whose
  name does not end in ``.weight`` (A, D, biases) stay F32; the other matrices take the file
  type (F32, F16, BF16, Q8_0, Q4_0); a matrix Q8_0 or Q4_0 cannot hold (row length not a
  multiple of 32) falls back to F16, as the converter's ``QuantError`` handler does. The
  converter itself stops at Q8_0 (llama.cpp makes Q4_0 with ``llama-quantize``, whose type
  mixes differ per tensor); the Q4_0 files apply the same per-tensor choice as Q8_0 with
  gguf-py's Q4_0 quantizer (``quantize_row_q4_0_ref``'s rule), so every matrix that can be
  Q4_0 is.
* vocabulary (``tiny_tied`` and ``g1_small`` files only): a small byte-level BPE trained here
  with the ``tokenizers`` package on the paragraph below (GPT-2 regex, no prefix space, as
  GPT-NeoX), stored as ``_set_vocab_gpt2`` does: ``tokenizer.ggml.model`` gpt2, ``pre``
  gpt-2, tokens by id, token types (CONTROL for special tokens), merges and special ids via
  ``gguf.SpecialVocab``. Its tokenizer.json is saved beside the files for the comparison test.
  The other files carry no vocabulary (llama.cpp would want one; mamba-wgpu does not).

Usage (from the repository root):

    python3.11 -m venv /tmp/ggufenv
    /tmp/ggufenv/bin/pip install -r scripts/requirements-gguf.txt
    /tmp/ggufenv/bin/python scripts/gen_gguf.py            # rewrites tests/fixtures/gguf/

Deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# (family dir, fixture, file types, with a vocabulary)
FILES = [
    ("mamba1", "tiny_tied", ["F32", "F16", "BF16", "Q8_0", "Q4_0"], True),
    ("mamba1", "untied_dconv3", ["F32", "F16"], False),
    ("mamba2", "g1_small", ["F32", "F16", "BF16", "Q8_0", "Q4_0"], True),
    ("mamba2", "groups2_hd12", ["F32", "F16"], False),
]

FTYPES = {
    "F32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "F16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "BF16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "Q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
    "Q4_0": (gguf.LlamaFileType.MOSTLY_Q4_0, gguf.GGMLQuantizationType.Q4_0),
}

# Training text for the tokenizers: written for this project, lower case and plain punctuation
# so that a vocabulary of 64 or 128 tokens holds its alphabet and some merges.
TEXT = """\
the river ran past the old mill and down to the sea. every morning the miller walked along
the bank to see how high the water stood, and every evening he wrote the number in a book.
in the spring the water rose, in the summer it fell, and in the autumn the rain came back.
the children of the village liked to sit on the wall and watch the wheel turn. one of them,
a girl who asked more questions than the others, wanted to know where the water went after
it left the mill. to the sea, said the miller. and after the sea? to the clouds, and then to
the hills, and then to the river again. so it is the same water, she said. the same water,
he said, but never the same river.
"""


def train_tokenizer(vocab_size: int, specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False, initial_alphabet=[]
    )
    tok.train_from_iterator([TEXT], trainer=trainer)
    got = tok.get_vocab_size(with_added_tokens=True)
    assert got == vocab_size, f"trained {got} tokens, wanted {vocab_size}"
    return tok


def set_vocab(w: gguf.GGUFWriter, tok: Tokenizer, cfg: dict, padded: int, workdir: Path) -> None:
    """What the converter's ``_set_vocab_gpt2`` writes, from a tokenizer.json in a folder."""
    tok.save(str(workdir / "tokenizer.json"))
    (workdir / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    (workdir / "config.json").write_text(json.dumps(cfg))
    vocab = tok.get_vocab(with_added_tokens=True)
    reverse = {i: t for t, i in vocab.items()}
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    tokens, types = [], []
    for i in range(padded):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            t = reverse[i]
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL if t in added else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(workdir, load_merges=True, n_vocab=len(tokens))
    assert special.merges, "no merges found"
    special.add_to_gguf(w)


def convert(family: str, name: str, ftype_name: str, with_vocab: bool, out: Path) -> Path:
    src = FIXTURES / family / name
    cfg = json.loads((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    mamba2 = family == "mamba2"
    arch = gguf.MODEL_ARCH.MAMBA2 if mamba2 else gguf.MODEL_ARCH.MAMBA
    n_layer = cfg["num_hidden_layers"]
    d_model = cfg["hidden_size"]
    d_inner = cfg.get("intermediate_size") or cfg["expand"] * d_model
    n_group = cfg.get("n_groups", 1)
    ftype, qtype = FTYPES[ftype_name]

    path = out / f"{family}-{name}-{ftype_name}.gguf"
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"{family}-{name}")
    w.add_context_length(2**20)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(cfg["conv_kernel"])
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(cfg["state_size"])
    if mamba2:
        w.add_ssm_time_step_rank(d_inner // cfg["head_dim"])
        w.add_ssm_group_count(n_group)
    else:
        w.add_ssm_time_step_rank(cfg["time_step_rank"])
    w.add_layer_norm_rms_eps(cfg["layer_norm_epsilon"])
    if not mamba2:
        w.add_ssm_dt_b_c_rms(False)
    w.add_file_type(ftype)

    if with_vocab:
        pad_multiple = 16 if mamba2 else 8
        padded = -(cfg["vocab_size"] // -pad_multiple) * pad_multiple
        specials = ["<|endoftext|>"] if not mamba2 else ["<|bos|>", "<|pad|>", "<|endoftext|>"]
        tok = train_tokenizer(cfg["vocab_size"], specials)
        with tempfile.TemporaryDirectory() as d:
            set_vocab(w, tok, cfg, padded, Path(d))
        tok_path = out / f"tokenizer-{family}-{name}.json"
        if not tok_path.exists():
            tok.save(str(tok_path))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tmap = gguf.get_tensor_name_map(arch, n_layer)
    for hf_name in sorted(tensors):
        data = tensors[hf_name].astype(np.float32)
        mapped = hf_name
        if mamba2 and mapped.endswith(".dt_bias"):
            mapped = mapped.rpartition(".dt_bias")[0] + ".dt_proj.bias"
        new_name = tmap.get_name(mapped, try_suffixes=(".weight", ".bias"))
        assert new_name is not None, f"cannot map {hf_name}"
        if hf_name.endswith(".A_log"):
            data = -np.exp(data)
        if ".ssm_conv1d." in new_name and new_name.endswith(".weight"):
            data = data.squeeze()
        elif mamba2 and (new_name.endswith(".ssm_a") or new_name.endswith(".ssm_d")):
            data = data.reshape((*data.shape, 1))
        elif mamba2 and new_name.endswith(".ssm_norm.weight"):
            data = data.reshape((n_group, d_inner // n_group))
        data = np.ascontiguousarray(data)

        if (
            data.ndim <= 1
            or new_name.endswith("_norm.weight")
            or ".ssm_conv1d." in new_name
            or not new_name.endswith(".weight")
        ):
            t = gguf.GGMLQuantizationType.F32
        else:
            t = qtype
        try:
            q = gguf.quants.quantize(data, t)
        except gguf.QuantError:
            t = gguf.GGMLQuantizationType.F16
            q = gguf.quants.quantize(data, t)
        w.add_tensor(new_name, q, raw_dtype=t)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=FIXTURES / "gguf")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for family, name, ftypes, vocab in FILES:
        for ft in ftypes:
            p = convert(family, name, ft, vocab, args.out)
            shown = p.relative_to(ROOT) if p.is_relative_to(ROOT) else p
            print(f"{shown}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
