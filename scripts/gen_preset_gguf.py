"""Write a random-weight GGUF of a preset's exact dimensions, as llama.cpp's converter lays it out.

The file is what ``convert_hf_to_gguf.py`` would write for a Hugging Face ``MambaForCausalLM`` /
``Mamba2ForCausalLM`` checkpoint of that size, so that ``llama-bench`` and mamba-wgpu's
``--preset`` bench time the same shapes (see scripts/bench_peers.sh). The dimensions are those of
``Mamba1Config::preset`` / ``Mamba2Config::preset`` in src/model/config.rs:

* mamba-*: d_state 16, d_conv 4, expand 2, dt_rank ceil(d_model / 16), vocabulary 50277 padded
  to a multiple of 8 (50280), conv bias, no in/out_proj bias, tied embeddings;
* mamba2-*: d_state 128, head_dim 64, n_groups 1, expand 2, d_conv 4, vocabulary 50277 padded
  to a multiple of 16 (50288), conv bias, no in/out_proj bias, tied embeddings.

Keys, tensor names, layouts and types follow scripts/gen_gguf.py (its ``FTYPES`` table is
imported; the renaming below is its ``convert`` applied to tensors made here instead of read
from a fixture). The vocabulary is the least llama.cpp loads: ``tokenizer.ggml.model`` = none
and ``{arch}.vocab_size`` = the padded row count, from which it makes that many dummy tokens
(llama-bench feeds random ids and needs no text). mamba-wgpu's loader ignores both keys.

Weights have a trained model's magnitudes so that no activation overflows: matrices uniform in
±1/sqrt(fan_in) (the embedding ±1/sqrt(d_model), the depthwise conv ±1/sqrt(d_conv)), norm
weights 1, A_log = log(1..d_state) per channel (Mamba-1) or log of U(1, 16) per head
(Mamba-2), D = 1, and the dt bias the inverse softplus of a step drawn log-uniformly in
[0.001, 0.1], as the reference initialisation does.

Usage (from the repository root; the same venv as gen_gguf.py):

    python3.11 -m venv /tmp/ggufenv
    /tmp/ggufenv/bin/pip install -r scripts/requirements-gguf.txt
    /tmp/ggufenv/bin/python scripts/gen_preset_gguf.py --preset mamba-130m --dtype f16 --out m.gguf

Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_gguf import FTYPES  # noqa: E402  (the converter's file and tensor types by name)

VOCAB = 50277

# name -> (d_model, n_layer), as in src/model/config.rs `preset()`.
MAMBA1 = {
    "mamba-130m": (768, 24),
    "mamba-370m": (1024, 48),
    "mamba-790m": (1536, 48),
    "mamba-1.4b": (2048, 48),
    "mamba-2.8b": (2560, 64),
}
MAMBA2 = {
    "mamba2-130m": (768, 24),
    "mamba2-370m": (1024, 48),
    "mamba2-780m": (1536, 48),
    "mamba2-1.3b": (2048, 48),
    "mamba2-2.7b": (2560, 64),
}


def config(preset: str) -> dict:
    """The preset's dimensions, in Hugging Face config spelling plus the padded vocabulary."""
    if preset in MAMBA1:
        d_model, n_layer = MAMBA1[preset]
        return {
            "family": "mamba1",
            "hidden_size": d_model,
            "num_hidden_layers": n_layer,
            "intermediate_size": 2 * d_model,
            "state_size": 16,
            "conv_kernel": 4,
            "time_step_rank": -(d_model // -16),
            "layer_norm_epsilon": 1e-5,
            "padded_vocab": -(VOCAB // -8) * 8,
        }
    if preset in MAMBA2:
        d_model, n_layer = MAMBA2[preset]
        return {
            "family": "mamba2",
            "hidden_size": d_model,
            "num_hidden_layers": n_layer,
            "intermediate_size": 2 * d_model,
            "state_size": 128,
            "conv_kernel": 4,
            "head_dim": 64,
            "n_groups": 1,
            "layer_norm_epsilon": 1e-5,
            "padded_vocab": -(VOCAB // -16) * 16,
        }
    known = ", ".join([*MAMBA1, *MAMBA2])
    raise SystemExit(f"unknown preset {preset!r} (known: {known})")


def uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    b = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-b, b, size=shape).astype(np.float32)


def dt_bias(rng: np.random.Generator, n: int) -> np.ndarray:
    """Inverse softplus of steps log-uniform in [0.001, 0.1]: softplus(bias) is the step."""
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), size=n))
    return (dt + np.log(-np.expm1(-dt))).astype(np.float32)


def hf_tensors(cfg: dict, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """The checkpoint's tensors under their Hugging Face names and shapes, one at a time."""
    d, di = cfg["hidden_size"], cfg["intermediate_size"]
    n, k = cfg["state_size"], cfg["conv_kernel"]
    yield "backbone.embeddings.weight", uniform(rng, (cfg["padded_vocab"], d), d)
    yield "backbone.norm_f.weight", np.ones(d, np.float32)
    for i in range(cfg["num_hidden_layers"]):
        p = f"backbone.layers.{i}."
        yield p + "norm.weight", np.ones(d, np.float32)
        yield p + "mixer.out_proj.weight", uniform(rng, (d, di), di)
        yield p + "mixer.D", np.ones(di if cfg["family"] == "mamba1" else di // cfg["head_dim"],
                                     np.float32)
        if cfg["family"] == "mamba1":
            r = cfg["time_step_rank"]
            conv = di
            yield p + "mixer.in_proj.weight", uniform(rng, (2 * di, d), d)
            yield p + "mixer.x_proj.weight", uniform(rng, (r + 2 * n, di), di)
            yield p + "mixer.dt_proj.weight", uniform(rng, (di, r), r)
            yield p + "mixer.dt_proj.bias", dt_bias(rng, di)
            a = np.log(np.arange(1, n + 1, dtype=np.float32))
            yield p + "mixer.A_log", np.ascontiguousarray(np.broadcast_to(a, (di, n)))
        else:
            h, g = di // cfg["head_dim"], cfg["n_groups"]
            conv = di + 2 * g * n
            yield p + "mixer.in_proj.weight", uniform(rng, (2 * di + 2 * g * n + h, d), d)
            yield p + "mixer.dt_bias", dt_bias(rng, h)
            yield p + "mixer.A_log", np.log(rng.uniform(1.0, 16.0, size=h)).astype(np.float32)
            yield p + "mixer.norm.weight", np.ones(di, np.float32)
        yield p + "mixer.conv1d.weight", uniform(rng, (conv, 1, k), k)
        yield p + "mixer.conv1d.bias", uniform(rng, (conv,), k)


def write(preset: str, dtype: str, out: Path, seed: int) -> None:
    cfg = config(preset)
    mamba2 = cfg["family"] == "mamba2"
    arch = gguf.MODEL_ARCH.MAMBA2 if mamba2 else gguf.MODEL_ARCH.MAMBA
    n_layer, d_model = cfg["num_hidden_layers"], cfg["hidden_size"]
    d_inner, n_group = cfg["intermediate_size"], cfg.get("n_groups", 1)
    ftype, qtype = FTYPES[dtype.upper()]

    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"{preset}-random")
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
    w.add_vocab_size(cfg["padded_vocab"])
    w.add_tokenizer_model("none")
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    rng = np.random.default_rng(seed)
    tmap = gguf.get_tensor_name_map(arch, n_layer)
    for hf_name, data in hf_tensors(cfg, rng):
        # From here on, scripts/gen_gguf.py's `convert`.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True, help="mamba-130m ... mamba2-2.7b")
    ap.add_argument("--dtype", default="f32", choices=[k.lower() for k in FTYPES])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write(a.preset, a.dtype, a.out, a.seed)
    print(f"{a.out}: {a.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
