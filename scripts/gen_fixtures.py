"""Generate Mamba-1 and Mamba-2 test fixtures for mamba-wgpu.

Builds tiny, seeded, random Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` models,
saves them with ``save_pretrained`` and records the outputs of transformers' own PyTorch
implementation (the reference) as small safetensors files under ``tests/fixtures/mamba1/`` and
``tests/fixtures/mamba2/``.  The Rust tests read these files and need no Python.  The Mamba-2
part lives in ``scripts/gen_fixtures_mamba2.py`` (see its docstring: there ``greedy`` is the
UNCACHED greedy decode, because transformers skips the dt clamp in its cached decode).

Usage (from the repository root):

    python3.11 -m venv /tmp/fixtures-venv
    /tmp/fixtures-venv/bin/pip install -r scripts/requirements.txt
    /tmp/fixtures-venv/bin/python scripts/gen_fixtures.py                 # both families
    /tmp/fixtures-venv/bin/python scripts/gen_fixtures.py --only mamba2   # or mamba1
    /tmp/fixtures-venv/bin/python scripts/gen_fixtures.py --out DIR --out-mamba2 DIR2  # elsewhere

Everything runs on CPU, in float32, through transformers' slow pure-torch path
(``use_mambapy=False``; the script refuses to run if mamba_ssm / causal_conv1d /
kernels are importable, because transformers would then use their kernels).

Mamba-1 layout written (see also scripts/README.md):

    <out>/manifest.json
    <out>/<name>/config.json + model.safetensors   (or model.safetensors.index.json + shards)
    <out>/<name>/reference.safetensors
        case{k}.ids             int64   [B, L]
        case{k}.logits          float32 [B, L, V]   model(ids, use_cache=False).logits
        case{k}.greedy          int64   [B, G]      generate(..., do_sample=False, use_cache=True), new tokens only
        case{k}.greedy_uncached int64   [B, G]      same via full forwards + argmax (no cache)
        case{k}.greedy_logits   float32 [B, G, V]   logits (cached decode) that chose greedy[:, j]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # reproducible CPU reductions
torch.use_deterministic_algorithms(True)

import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import MambaConfig, MambaForCausalLM  # noqa: E402

SEED = 20240611
G = 8  # greedy tokens per case
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "mamba1"
DEFAULT_OUT_MAMBA2 = REPO_ROOT / "tests" / "fixtures" / "mamba2"


def check_pure_torch() -> None:
    for pkg in ("mamba_ssm", "causal_conv1d", "kernels", "mambapy"):
        if importlib.util.find_spec(pkg) is not None:
            sys.exit(f"refusing to run: '{pkg}' is importable; transformers could use its kernels instead of "
                     "the pure-torch reference path. Use a clean venv (scripts/requirements.txt).")


# --------------------------------------------------------------------------- weights


@torch.no_grad()
def randomise(model: MambaForCausalLM, seed: int) -> None:
    """Overwrite every parameter with varied, seeded values (nothing left at defaults)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float32)

    H, E, N, K, R = (cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.conv_kernel,
                     cfg.time_step_rank)
    bb = model.backbone
    bb.embeddings.weight.copy_(0.5 * randn(*bb.embeddings.weight.shape))
    for layer in bb.layers:
        m = layer.mixer
        layer.norm.weight.copy_(1.0 + 0.1 * randn(H))
        m.in_proj.weight.copy_(randn(2 * E, H) / math.sqrt(H))
        if m.in_proj.bias is not None:
            m.in_proj.bias.copy_(0.1 * randn(2 * E))
        m.conv1d.weight.copy_(0.5 * randn(E, 1, K))
        if m.conv1d.bias is not None:
            m.conv1d.bias.copy_(0.2 * randn(E))
        m.x_proj.weight.copy_(randn(R + 2 * N, E) / math.sqrt(E))
        m.dt_proj.weight.copy_(0.3 * randn(E, R) / math.sqrt(R))
        # softplus(bias) spans ~0.001 .. 0.5 (log-uniform); bias = inverse softplus
        dt = torch.exp(unif(math.log(1e-3), math.log(0.5), E))
        m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        m.A_log.copy_(torch.log(unif(1.0, 16.0, E, N)))
        m.D.copy_(randn(E))
        # large enough that the mixers (not the token's own embedding) dominate the residual stream
        m.out_proj.weight.copy_(4.0 * randn(H, E) / math.sqrt(E))
        if m.out_proj.bias is not None:
            m.out_proj.bias.copy_(0.1 * randn(H))
    bb.norm_f.weight.copy_(1.0 + 0.1 * randn(H))
    if not cfg.tie_word_embeddings:
        model.lm_head.weight.copy_(0.5 * randn(cfg.vocab_size, H))
    else:
        assert model.lm_head.weight.data_ptr() == bb.embeddings.weight.data_ptr(), "lm_head not tied"


def build_model(cfg_kwargs: dict, seed: int) -> MambaForCausalLM:
    torch.manual_seed(seed)
    cfg = MambaConfig(use_mambapy=False, **cfg_kwargs)
    model = MambaForCausalLM(cfg).float().eval()
    randomise(model, seed + 1)
    return model


# --------------------------------------------------------------------------- references


@torch.no_grad()
def full_logits(model, ids):
    return model(ids, use_cache=False).logits.float()


@torch.no_grad()
def greedy_cached(model, ids, g):
    # Disable EOS on the model's own generation config (an eos_token_id=None in a passed
    # GenerationConfig is silently refilled from the model defaults in transformers 5.x, and
    # min_new_tokens would mask the EOS logit, i.e. change the argmax). Restored afterwards so the
    # saved generation_config.json keeps transformers' defaults.
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=g, do_sample=False,
                             num_beams=1, use_cache=True, return_dict_in_generate=True, output_logits=True)
    finally:
        model.generation_config.eos_token_id = saved
    new = out.sequences[:, ids.shape[1]:]
    assert new.shape == (ids.shape[0], g), f"generate returned {tuple(new.shape)} new tokens, want {g}"
    step_logits = torch.stack([l.float() for l in out.logits], dim=1)  # [B, G, V]
    assert torch.equal(step_logits.argmax(-1), new), "generate did not pick argmax (logit processors active?)"
    return new.clone(), step_logits


@torch.no_grad()
def greedy_uncached(model, ids, g):
    seq = ids
    for _ in range(g):
        nxt = full_logits(model, seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[:, ids.shape[1]:].clone()


def top2_margin(logits):
    t = logits.float().topk(2, dim=-1).values
    return (t[..., 0] - t[..., 1]).min().item()


def make_ids(gen, b, l, vocab_hi):
    return torch.randint(0, vocab_hi, (b, l), generator=gen, dtype=torch.int64)


def run_cases(model, cases, seed, vocab_hi, name):
    """cases: list of (B, L). Returns (tensors, manifest_cases, max_abs_logit)."""
    gen = torch.Generator().manual_seed(seed)
    tensors, mcases, max_abs = {}, [], 0.0
    m64 = copy.deepcopy(model).double()
    for k, (b, l) in enumerate(cases):
        # re-draw the prompt (up to 50x) if a greedy step has a near-tie, so float noise in
        # another implementation cannot flip the argmax
        for attempt in range(50):
            ids = make_ids(gen, b, l, vocab_hi)
            logits = full_logits(model, ids)
            greedy, step_logits = greedy_cached(model, ids, G)
            unc = greedy_uncached(model, ids, G)
            margin = min(top2_margin(step_logits), top2_margin(logits[:, -1]))
            ok_vocab = int(greedy.max()) < vocab_hi and int(unc.max()) < vocab_hi
            if margin > 2e-2 and ok_vocab:
                break
        else:
            sys.exit(f"{name} case{k}: could not find a prompt without greedy near-ties")
        same = torch.equal(greedy, unc)
        assert same, f"{name} case{k}: cached greedy {greedy.tolist()} != uncached {unc.tolist()}"
        l64 = m64(ids, use_cache=False).logits
        dev64 = (logits.double() - l64).abs().max().item()
        mx = logits.abs().max().item()
        max_abs = max(max_abs, mx)
        tensors[f"case{k}.ids"] = ids.contiguous()
        tensors[f"case{k}.logits"] = logits.contiguous()
        tensors[f"case{k}.greedy"] = greedy.contiguous()
        tensors[f"case{k}.greedy_uncached"] = unc.contiguous()
        tensors[f"case{k}.greedy_logits"] = step_logits.contiguous()
        mcases.append({
            "case": k, "B": b, "L": l, "G": G,
            "max_abs_logit": round(mx, 4),
            "min_greedy_top2_margin": round(margin, 5),
            "f32_vs_f64_max_abs_logit_diff": float(f"{dev64:.3g}"),
            "greedy_equals_uncached": same,
            "prompt_redraws": attempt,
        })
        print(f"  case{k}: B={b} L={l:3d} max|logit|={mx:7.3f} margin={margin:.4f} "
              f"f32-f64={dev64:.2e} greedy==uncached={same} greedy[0]={greedy[0].tolist()}")
    return tensors, mcases, max_abs


# --------------------------------------------------------------------------- checks / saving


def check_reload_hf(folder: Path, tensors, ncases):
    m = MambaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert not m.config.use_mambapy
    worst = 0.0
    for k in range(ncases):
        got = full_logits(m, tensors[f"case{k}.ids"])
        want = tensors[f"case{k}.logits"]
        diff = (got - want).abs().max().item()
        # not always bit-exact: CPU GEMV kernels may differ with the (mmap) alignment of loaded weights
        assert diff <= 1e-4, f"reloaded checkpoint in {folder} gives different logits (max diff {diff})"
        worst = max(worst, diff)
    return worst


def dims(cfg: MambaConfig, vocab_in_weights: int):
    return {
        "d_model": cfg.hidden_size, "d_inner": cfg.intermediate_size, "d_state": cfg.state_size,
        "d_conv": cfg.conv_kernel, "dt_rank": int(cfg.time_step_rank), "n_layer": cfg.num_hidden_layers,
        "vocab": vocab_in_weights, "config_vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_word_embeddings, "use_bias": cfg.use_bias,
        "use_conv_bias": cfg.use_conv_bias, "residual_in_fp32": cfg.residual_in_fp32,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
    }


def safetensors_dtypes(folder: Path):
    from safetensors import safe_open
    dts, keys = set(), []
    for f in sorted(folder.glob("*.safetensors")):
        if f.name == "reference.safetensors":
            continue
        with safe_open(str(f), "pt") as h:
            for key in h.keys():
                keys.append(key)
                dts.add(str(h.get_slice(key).get_dtype()))
    return sorted(dts), sorted(keys)


def hf_fixture(out: Path, name, covers, cfg_kwargs, seed, cases, save_dtype=None, max_shard_size=None,
               model_seed=None):
    print(f"[{name}]")
    model = build_model(cfg_kwargs, model_seed if model_seed is not None else seed)
    if save_dtype is not None:
        # round the weights to the storage dtype; references use the f32 model with rounded weights
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(save_dtype).float())
    tensors, mcases, max_abs = run_cases(model, cases, seed + 7, model.config.vocab_size, name)
    folder = out / name
    folder.mkdir(parents=True)
    to_save = model if save_dtype is None else copy.deepcopy(model).to(save_dtype)
    kw = {"safe_serialization": True}
    if max_shard_size is not None:
        kw["max_shard_size"] = max_shard_size
    to_save.save_pretrained(folder, **kw)
    save_file(tensors, str(folder / "reference.safetensors"))
    reload_diff = check_reload_hf(folder, tensors, len(cases))
    print(f"  reload via MambaForCausalLM.from_pretrained: max |logit diff| = {reload_diff:.2e}")
    sharded = (folder / "model.safetensors.index.json").exists()
    if max_shard_size is not None:
        nshards = len(list(folder.glob("model-*-of-*.safetensors")))
        assert sharded and nshards >= 2, f"{name}: expected >= 2 shards, got {nshards}"
    dts, keys = safetensors_dtypes(folder)
    print(f"  max|logit| = {max_abs:.3f}; files: {sorted(p.name for p in folder.iterdir())}; dtypes {dts}")
    return {
        "name": name, "folder": name, "covers": covers, "spelling": "hf",
        "dims": dims(model.config, model.config.vocab_size),
        "weight_dtype": dts[0] if len(dts) == 1 else dts,
        "sharded": sharded,
        "checkpoint_files": sorted(p.name for p in folder.iterdir() if p.name != "reference.safetensors"),
        "weight_keys": keys,
        "model_seed": model_seed if model_seed is not None else seed, "prompt_seed": seed + 7,
        "max_abs_logit": round(max_abs, 4),
        "cases": mcases,
    }


def state_spaces_fixture(out: Path, name, covers, seed, cases):
    print(f"[{name}]")
    d_model, n_layer, vocab, mult = 40, 3, 250, 8
    padded = ((vocab + mult - 1) // mult) * mult
    cfg_kwargs = dict(vocab_size=padded, hidden_size=d_model, num_hidden_layers=n_layer, state_size=16,
                      conv_kernel=4, expand=2, time_step_rank="auto", tie_word_embeddings=True,
                      use_bias=False, use_conv_bias=True, residual_in_fp32=True, layer_norm_epsilon=1e-5)
    model = build_model(cfg_kwargs, seed)
    with torch.no_grad():  # padding rows of the embedding: zeros (never used as inputs)
        model.backbone.embeddings.weight[vocab:].zero_()
    tensors, mcases, max_abs = run_cases(model, cases, seed + 7, vocab, name)
    folder = out / name
    folder.mkdir(parents=True)
    sd = {}
    for k, v in model.state_dict().items():
        k2 = k.replace("backbone.embeddings.weight", "backbone.embedding.weight")
        sd[k2] = v.detach().clone().contiguous()
    sd["lm_head.weight"] = sd["backbone.embedding.weight"].clone()
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ss_cfg = {"d_model": d_model, "n_layer": n_layer, "vocab_size": vocab,
              "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2}, "rms_norm": True,
              "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": mult,
              "tie_embeddings": True}
    (folder / "config.json").write_text(json.dumps(ss_cfg, indent=2) + "\n")
    save_file(tensors, str(folder / "reference.safetensors"))
    # sanity: rename back, load strictly into a fresh HF model, same logits
    back = load_file(str(folder / "model.safetensors"))
    assert torch.equal(back["lm_head.weight"], back["backbone.embedding.weight"])
    back["backbone.embeddings.weight"] = back.pop("backbone.embedding.weight")
    m2 = MambaForCausalLM(MambaConfig(use_mambapy=False, **cfg_kwargs)).float().eval()
    m2.load_state_dict(back, strict=True)
    for k in range(len(cases)):
        assert torch.equal(full_logits(m2, tensors[f"case{k}.ids"]), tensors[f"case{k}.logits"])
    dts, keys = safetensors_dtypes(folder)
    print(f"  max|logit| = {max_abs:.3f}; files: {sorted(p.name for p in folder.iterdir())}")
    d = dims(model.config, padded)
    d["config_vocab_size"] = vocab
    return {
        "name": name, "folder": name, "covers": covers, "spelling": "state-spaces",
        "dims": d, "weight_dtype": dts[0], "sharded": False,
        "checkpoint_files": ["config.json", "model.safetensors"], "weight_keys": keys,
        "model_seed": seed, "prompt_seed": seed + 7, "max_abs_logit": round(max_abs, 4),
        "prompt_ids_below": vocab,
        "cases": mcases,
    }


def generate_mamba1(out: Path) -> None:
    """Writes every Mamba-1 fixture + manifest.json into `out` (which must not exist)."""
    out.mkdir(parents=True)

    tiny = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, state_size=16, conv_kernel=4, expand=2,
                time_step_rank="auto", tie_word_embeddings=True, use_conv_bias=True, use_bias=False)
    untied = dict(vocab_size=160, hidden_size=48, num_hidden_layers=3, state_size=12, conv_kernel=3, expand=2,
                  time_step_rank=5, tie_word_embeddings=False, use_conv_bias=True, use_bias=True)
    odd = dict(vocab_size=97, hidden_size=36, num_hidden_layers=3, state_size=8, conv_kernel=4, expand=2,
               time_step_rank="auto", tie_word_embeddings=False, residual_in_fp32=True)

    fx = []
    fx.append(hf_fixture(out, "tiny_tied",
                         "tied lm_head, d_conv 4, dt_rank auto (2); prompts shorter than/equal to d_conv-1 and "
                         "longer than scan chunks 32/64/128; batch 2",
                         tiny, SEED + 100, [(1, 1), (1, 2), (1, 3), (1, 37), (1, 70), (1, 150), (2, 37)]))
    fx.append(hf_fixture(out, "untied_dconv3",
                         "untied lm_head, d_conv 3, explicit dt_rank 5, in_proj/out_proj biases, d_model 48",
                         untied, SEED + 200, [(1, 1), (1, 2), (1, 37), (1, 150), (2, 37)]))
    fx.append(hf_fixture(out, "odd_sizes",
                         "odd vocab 97, d_model 36, d_inner 72, d_state 8, untied, residual_in_fp32",
                         odd, SEED + 300, [(1, 1), (1, 5), (1, 70), (2, 5)]))
    fx.append(hf_fixture(out, "f16_weights",
                         "tiny_tied dims, weights stored as float16 on disk (references: f32 math on the "
                         "f16-rounded weights)",
                         tiny, SEED + 400, [(1, 1), (1, 37)], save_dtype=torch.float16))
    fx.append(hf_fixture(out, "bf16_weights",
                         "tiny_tied dims, weights stored as bfloat16 on disk (references: f32 math on the "
                         "bf16-rounded weights)",
                         tiny, SEED + 500, [(1, 1), (1, 37)], save_dtype=torch.bfloat16))
    fx.append(hf_fixture(out, "sharded",
                         "same config AND same weights as untied_dconv3, saved as model.safetensors.index.json "
                         "+ several shards",
                         untied, SEED + 600, [(1, 3), (1, 37)], max_shard_size="150KB", model_seed=SEED + 200))
    fx.append(state_spaces_fixture(out, "state_spaces",
                                   "original state-spaces/mamba_ssm spelling (config d_model/ssm_cfg, "
                                   "backbone.embedding.weight, vocab 250 padded to 256, lm_head.weight stored "
                                   "too); logits have 256 columns", SEED + 700, [(1, 1), (1, 37)]))

    manifest = {
        "description": "Mamba-1 reference fixtures generated by scripts/gen_fixtures.py from transformers' "
                       "MambaForCausalLM (CPU, float32, slow pure-torch path, use_mambapy=False).",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__},
        "seed": SEED,
        "greedy_tokens": G,
        "greedy_notes": "greedy = generate(do_sample=False, use_cache=True) with eos_token_id disabled "
                        "(never stops early; config.json keeps transformers' default eos_token_id 0); "
                        "prompts are redrawn until every greedy step has top1-top2 logit margin > 0.02",
        "reference_tensors": {
            "case{k}.ids": "int64 [B, L]",
            "case{k}.logits": "float32 [B, L, V] model(ids, use_cache=False).logits",
            "case{k}.greedy": "int64 [B, G] new tokens from generate(use_cache=True)",
            "case{k}.greedy_uncached": "int64 [B, G] same via repeated full forwards + argmax",
            "case{k}.greedy_logits": "float32 [B, G, V] logits (cached decode) whose argmax is greedy[:, j]",
        },
        "fixtures": fx,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1024:.1f} KiB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Mamba-1 output folder (rewritten)")
    ap.add_argument("--out-mamba2", type=Path, default=DEFAULT_OUT_MAMBA2,
                    help="Mamba-2 output folder (rewritten)")
    ap.add_argument("--only", choices=["mamba1", "mamba2"], help="generate one family only (default: both)")
    args = ap.parse_args()
    check_pure_torch()
    if args.only in (None, "mamba1"):
        if args.out.exists():
            shutil.rmtree(args.out)
        generate_mamba1(args.out)
    if args.only in (None, "mamba2"):
        # imported here: the module sits next to this script (scripts/ is sys.path[0])
        from gen_fixtures_mamba2 import generate_mamba2
        if args.out_mamba2.exists():
            shutil.rmtree(args.out_mamba2)
        generate_mamba2(args.out_mamba2)


if __name__ == "__main__":
    main()
