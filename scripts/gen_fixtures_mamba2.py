"""Mamba-2 part of scripts/gen_fixtures.py (run that script; this module is imported by it).

Builds tiny, seeded, random Hugging Face ``Mamba2ForCausalLM`` models and records the outputs of
transformers' own pure-torch implementation (``Mamba2Mixer`` with the torch fallbacks of
``causal_conv1d_fn`` / ``causal_conv1d_update`` / ``mamba2_chunk_scan`` /
``mamba2_selective_state_update``; gen_fixtures.py refuses to run when mamba_ssm, causal_conv1d or
kernels are importable) under ``tests/fixtures/mamba2/``.

Layout written:

    <out>/manifest.json
    <out>/<name>/config.json + generation_config.json + model.safetensors   (save_pretrained)
    <out>/state_spaces/config.json + model.safetensors                      (mamba_ssm spelling)
    <out>/<name>/reference.safetensors
        case{k}.ids            int64   [B, L]
        case{k}.logits         float32 [B, L, V]  model(ids, use_cache=False).logits
        case{k}.greedy         int64   [B, G]     UNCACHED greedy: full forward over ids + generated
                                                  tokens each step, argmax of the last logits (no EOS stop)
        case{k}.greedy_logits  float32 [B, G, V]  the full-forward last-position logits whose argmax
                                                  is greedy[:, j]
        case{k}.greedy_cached  int64   [B, G]     generate(do_sample=False, use_cache=True), for
                                                  information only (see below)

Why the reference greedy tokens are the UNCACHED ones: transformers (and mamba_ssm) apply the
``time_step_limit`` clamp of dt only in the chunked (prefill / full-forward) path; their cached
single-token decode (``mamba2_selective_state_update``, mamba_ssm's ``selective_state_update``) is
called without ``dt_limit``, so with a finite limit their cached greedy tokens can drift from their
own full-forward tokens. mamba-wgpu applies the clamp in both paths, so its cached decode must
reproduce the uncached tokens. The manifest records per case whether cached == uncached, and
whether cached generation with the clamp patched into the decode path equals uncached (it must).

Independent check: every case is also recomputed with a naive float64 token-by-token recurrence
written here (``Naive``: per-group gated RMSNorm, dt = clamp(softplus(dt + dt_bias)), h = exp(dt*A)*h
+ dt*x*B, y = C.h + D*x); its logits must match transformers' to float32 precision and its greedy
tokens (which use the clamp in every step, like mamba-wgpu) must equal ``greedy``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import safetensors
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Mamba2Config, Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2

SEED = 20240611
G = 8  # greedy tokens per case
MARGIN = 2e-2  # min top1-top2 logit gap of every greedy step
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "mamba2"

GREEDY_NOTES = (
    "greedy = UNCACHED greedy decoding with transformers: each step is a full forward "
    "model(ids + tokens so far, use_cache=False) and the argmax of the last position (never stops at EOS); "
    "greedy_logits are those last-position logits. Reason: transformers and mamba_ssm skip the "
    "time_step_limit clamp of dt in their cached single-token decode path (selective_state_update gets no "
    "dt_limit), so with a finite limit their cached greedy tokens can drift from their own full-forward "
    "tokens; mamba-wgpu applies the clamp in both paths, so its cached decode must equal these uncached "
    "tokens. greedy_cached = generate(do_sample=False, use_cache=True), EOS disabled, for information; "
    "per case the manifest says whether it equals greedy, and whether generate with the clamp patched into "
    "the decode path equals greedy. Prompts are redrawn until every greedy step has top1-top2 logit margin "
    f"> {MARGIN}."
)

SEMANTICS = {
    "in_proj": "out = [z (d_inner), xBC (d_inner + 2*n_groups*d_state), dt (n_heads)]; xBC = [x, B, C]",
    "conv1d": "depthwise causal conv over the xBC channels (weight [conv_dim, 1, d_conv], zero left padding), "
              "+ bias, then SiLU",
    "dt": "dt = clamp(softplus(dt_raw + dt_bias), time_step_limit[0], time_step_limit[1]) in the chunked "
          "path (transformers' cached decode skips the clamp, see greedy_notes)",
    "ssm": "A = -exp(A_log) per head; head h uses B/C group h // (n_heads/n_groups); "
           "h_t = exp(dt*A)*h_{t-1} + dt*x_t*B_t; y_t = C_t.h_t + D*x_t",
    "gated_norm": "norm_before_gate=false: y = RMSNorm_per_group(y * silu(z)) * norm.weight, groups are "
                  "n_groups contiguous slices of d_inner (size d_inner/n_groups), eps = layer_norm_epsilon; "
                  "transformers 5.23 MambaRMSNormGated normalises per group (checked by the script), so no "
                  "patch was needed",
    "block": "h = h + out_proj(mixer(RMSNorm(h) * norm.weight)); residual in float32; logits = "
             "lm_head(RMSNorm(h) * norm_f.weight)",
}


# --------------------------------------------------------------------------- model


def check_gated_norm_per_group() -> None:
    """Fail loudly if the installed MambaRMSNormGated does not normalise per group."""
    g = torch.Generator().manual_seed(0)
    n = modeling_mamba2.MambaRMSNormGated(12, group_size=4, eps=1e-5)
    with torch.no_grad():
        n.weight.copy_(1 + 0.1 * torch.randn(12, generator=g))
    x, z = torch.randn(3, 12, generator=g), torch.randn(3, 12, generator=g)
    y = (x * F.silu(z)).view(3, 3, 4)
    want = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)).view(3, 12) * n.weight
    with torch.no_grad():
        got = n(x, z)
    if not torch.allclose(got, want, atol=1e-6):
        sys.exit("installed transformers' MambaRMSNormGated does not normalise per group (or does not gate "
                 "before the norm): the generator must patch it (see the brief) before its output can serve "
                 "as the reference")


def make_config(**kw) -> Mamba2Config:
    kw = dict(kw)
    kw.setdefault("num_hidden_layers", 3)
    kw.setdefault("layer_norm_epsilon", 1e-5)
    kw.setdefault("residual_in_fp32", True)
    kw.setdefault("use_conv_bias", True)
    # transformers 5.23 has no rms_norm / norm_before_gate fields: it always gates before the per-group
    # RMSNorm (= mamba_ssm's norm_before_gate=False). They are stored in config.json as documentation.
    kw.setdefault("rms_norm", True)
    kw.setdefault("norm_before_gate", False)
    assert kw["rms_norm"] is True and kw["norm_before_gate"] is False, "transformers implements only these"
    assert kw["num_heads"] * kw["head_dim"] == kw["expand"] * kw["hidden_size"], "num_heads*head_dim != d_inner"
    assert kw["num_heads"] % kw["n_groups"] == 0
    return Mamba2Config(**kw)


@torch.no_grad()
def randomise(model: Mamba2ForCausalLM, seed: int) -> None:
    """Overwrite every parameter with varied, seeded values (nothing left at defaults)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    touched = set()

    def put(p, v):
        assert p.shape == v.shape, (p.shape, v.shape)
        p.copy_(v)
        touched.add(id(p))

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    def unif(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float32)

    Hd, H, P, N, Gr, K = (cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.state_size, cfg.n_groups,
                          cfg.conv_kernel)
    E = H * P
    conv_dim = E + 2 * Gr * N
    bb = model.backbone
    put(bb.embeddings.weight, 0.5 * randn(*bb.embeddings.weight.shape))
    for layer in bb.layers:
        m = layer.mixer
        put(layer.norm.weight, 1.0 + 0.1 * randn(Hd))
        w = randn(E + conv_dim + H, Hd) / math.sqrt(Hd)
        w[E + conv_dim:] *= 0.5  # dt rows: input-dependent spread of dt around softplus(dt_bias)
        put(m.in_proj.weight, w)
        if m.in_proj.bias is not None:
            put(m.in_proj.bias, 0.1 * randn(E + conv_dim + H))
        put(m.conv1d.weight, 0.5 * randn(conv_dim, 1, K))
        if m.conv1d.bias is not None:
            put(m.conv1d.bias, 0.2 * randn(conv_dim))
        # softplus(dt_bias) log-stratified over ~0.001 .. 0.5 (every head count covers the range), shuffled
        u = (torch.arange(H, dtype=torch.float32) + unif(0.0, 1.0, H)) / H
        dt = torch.exp(math.log(1e-3) + u * (math.log(0.5) - math.log(1e-3)))
        dt = dt[torch.randperm(H, generator=g)]
        put(m.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        put(m.A_log, torch.log(unif(1.0, 16.0, H)))
        put(m.D, randn(H))
        put(m.norm.weight, 1.0 + 0.1 * randn(E))
        # large enough that the mixers (not the token's own embedding) dominate the residual stream
        put(m.out_proj.weight, 4.0 * randn(Hd, E) / math.sqrt(E))
        if m.out_proj.bias is not None:
            put(m.out_proj.bias, 0.1 * randn(Hd))
    put(bb.norm_f.weight, 1.0 + 0.1 * randn(Hd))
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == bb.embeddings.weight.data_ptr(), "lm_head not tied"
    else:
        assert model.lm_head.weight.data_ptr() != bb.embeddings.weight.data_ptr()
        put(model.lm_head.weight, 0.5 * randn(cfg.vocab_size, Hd))
    missed = [n for n, p in model.named_parameters() if id(p) not in touched]
    assert not missed, f"parameters left at their defaults: {missed}"


def build_model(cfg: Mamba2Config, seed: int) -> Mamba2ForCausalLM:
    torch.manual_seed(seed)
    model = Mamba2ForCausalLM(cfg).float().eval()
    randomise(model, seed + 1)
    return model


# --------------------------------------------------------------------------- naive float64 reference


class Naive:
    """Token-by-token float64 Mamba-2 (clamp applied in every step), written from the spec."""

    def __init__(self, model: Mamba2ForCausalLM):
        c = model.config
        self.c = c
        self.H, self.P, self.N, self.G, self.K = c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel
        self.E = self.H * self.P
        self.lo, self.hi = float(c.time_step_limit[0]), float(c.time_step_limit[1])
        self.eps = c.layer_norm_epsilon

        def d(t):
            return None if t is None else t.detach().double().clone()

        bb = model.backbone
        self.emb, self.norm_f, self.lm_head = d(bb.embeddings.weight), d(bb.norm_f.weight), d(model.lm_head.weight)
        self.layers = []
        for layer in bb.layers:
            m = layer.mixer
            self.layers.append(dict(
                norm=d(layer.norm.weight), w_in=d(m.in_proj.weight), b_in=d(m.in_proj.bias),
                conv_w=d(m.conv1d.weight)[:, 0, :], conv_b=d(m.conv1d.bias), dt_bias=d(m.dt_bias),
                A=-torch.exp(d(m.A_log)), D=d(m.D), gnorm=d(m.norm.weight), w_out=d(m.out_proj.weight),
                b_out=d(m.out_proj.bias)))

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def init_state(self, b):
        conv_dim = self.E + 2 * self.G * self.N
        return [(torch.zeros(b, conv_dim, self.K - 1, dtype=torch.float64),
                 torch.zeros(b, self.H, self.P, self.N, dtype=torch.float64)) for _ in self.layers]

    def step(self, state, tok):
        b = tok.shape[0]
        H, P, N, Gr, E = self.H, self.P, self.N, self.G, self.E
        h = self.emb[tok]
        for i, p in enumerate(self.layers):
            conv, ssm = state[i]
            u = self.rms(h, p["norm"]) @ p["w_in"].T
            if p["b_in"] is not None:
                u = u + p["b_in"]
            z, xbc, dt = u.split([E, E + 2 * Gr * N, H], dim=-1)
            win = torch.cat([conv, xbc[:, :, None]], dim=-1)  # [b, conv_dim, K]
            conv = win[:, :, 1:]
            xbc = (win * p["conv_w"]).sum(-1)
            if p["conv_b"] is not None:
                xbc = xbc + p["conv_b"]
            xbc = F.silu(xbc)
            x, Bm, Cm = xbc.split([E, Gr * N, Gr * N], dim=-1)
            dt = F.softplus(dt + p["dt_bias"]).clamp(self.lo, self.hi)  # [b, H]
            x = x.view(b, H, P)
            Bm = Bm.view(b, Gr, N).repeat_interleave(H // Gr, dim=1)  # head h -> group h // (H/G)
            Cm = Cm.view(b, Gr, N).repeat_interleave(H // Gr, dim=1)
            dA = torch.exp(dt * p["A"])
            ssm = ssm * dA[:, :, None, None] + (dt[:, :, None] * x)[..., None] * Bm[:, :, None, :]
            y = (ssm * Cm[:, :, None, :]).sum(-1) + p["D"][None, :, None] * x
            y = y.reshape(b, E) * F.silu(z)
            yg = y.view(b, Gr, E // Gr)
            y = (yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + self.eps)).reshape(b, E) * p["gnorm"]
            o = y @ p["w_out"].T
            if p["b_out"] is not None:
                o = o + p["b_out"]
            h = h + o
            state[i] = (conv, ssm)
        return self.rms(h, self.norm_f) @ self.lm_head.T

    def run(self, ids, g):
        """Returns (prompt logits [B, L, V], greedy tokens [B, g]) in float64."""
        st = self.init_state(ids.shape[0])
        out = [self.step(st, ids[:, t]) for t in range(ids.shape[1])]
        logits = torch.stack(out, dim=1)
        toks, last = [], out[-1]
        for _ in range(g):
            nxt = last.argmax(-1)
            toks.append(nxt)
            last = self.step(st, nxt)
        return logits, torch.stack(toks, dim=1)


# --------------------------------------------------------------------------- references


@torch.no_grad()
def full_logits(model, ids):
    return model(ids, use_cache=False).logits.float()


@torch.no_grad()
def greedy_uncached(model, ids, g):
    seq, steps = ids, []
    for _ in range(g):
        last = full_logits(model, seq)[:, -1]
        steps.append(last)
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)
    return seq[:, ids.shape[1]:].clone(), torch.stack(steps, dim=1).contiguous()


@torch.no_grad()
def greedy_cached(model, ids, g, clamp_decode=False):
    """generate(use_cache=True); with clamp_decode, the time_step_limit clamp is patched into the decode."""
    lo, hi = (float(v) for v in model.config.time_step_limit)
    orig = modeling_mamba2.mamba2_selective_state_update

    def clamped(state, hidden_states, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, **kw):
        if dt_bias is not None:
            dt = dt + dt_bias.to(dt.dtype)
        if dt_softplus:
            dt = F.softplus(dt)
        return orig(state, hidden_states, dt.clamp(lo, hi), A, B, C, D, dt_bias=None, dt_softplus=False, **kw)

    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None  # never stop early (see gen_fixtures.greedy_cached)
    if clamp_decode:
        modeling_mamba2.mamba2_selective_state_update = clamped
    try:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=g, do_sample=False,
                             num_beams=1, use_cache=True, return_dict_in_generate=True, output_logits=True)
    finally:
        model.generation_config.eos_token_id = saved
        modeling_mamba2.mamba2_selective_state_update = orig
    new = out.sequences[:, ids.shape[1]:]
    assert new.shape == (ids.shape[0], g), f"generate returned {tuple(new.shape)} new tokens, want {g}"
    step_logits = torch.stack([l.float() for l in out.logits], dim=1)
    assert torch.equal(step_logits.argmax(-1), new), "generate did not pick argmax (logit processors active?)"
    return new.clone(), step_logits


def top2_margin(logits):
    t = logits.float().topk(2, dim=-1).values
    return (t[..., 0] - t[..., 1]).min().item()


class DtStats:
    """Counts, over every (token, head, layer) of the forwards it watches, how often dt is clamped."""

    def __init__(self, model):
        self.lo, self.hi = (float(v) for v in model.config.time_step_limit)
        self.n = self.at_min = self.at_max = 0
        self.active = False
        self.handles = []
        for layer in model.backbone.layers:
            m = layer.mixer
            self.handles.append(m.in_proj.register_forward_hook(self._hook(m)))

    def _hook(self, m):
        def hook(_mod, _inp, out):
            if self.active:
                dt = F.softplus(out[..., -m.num_heads:].double() + m.dt_bias.double())
                self.n += dt.numel()
                self.at_min += int((dt < self.lo).sum())
                self.at_max += int((dt > self.hi).sum())
        return hook

    def close(self):
        for h in self.handles:
            h.remove()

    def summary(self):
        return {"tokens_x_heads_x_layers": self.n,
                "fraction_clamped_at_min": round(self.at_min / max(self.n, 1), 4),
                "fraction_clamped_at_max": round(self.at_max / max(self.n, 1), 4)}


def run_cases(model, cases, seed, vocab_hi, name):
    """cases: list of (B, L). Returns (tensors, manifest cases, max|logit|, dt clamp stats)."""
    gen = torch.Generator().manual_seed(seed)
    naive = Naive(model)
    stats = DtStats(model)
    finite = math.isfinite(float(model.config.time_step_limit[1])) or float(model.config.time_step_limit[0]) > 0
    tensors, mcases, max_abs = {}, [], 0.0
    for k, (b, l) in enumerate(cases):
        for attempt in range(100):
            ids = torch.randint(0, vocab_hi, (b, l), generator=gen, dtype=torch.int64)
            logits = full_logits(model, ids)
            greedy, step_logits = greedy_uncached(model, ids, G)
            margin = top2_margin(step_logits)
            if margin > MARGIN and int(greedy.max()) < vocab_hi:
                break
        else:
            sys.exit(f"{name} case{k}: could not find a prompt without greedy near-ties")
        assert torch.equal(step_logits[:, 0], logits[:, -1])
        stats.active = True
        full_logits(model, ids)
        stats.active = False
        cached, cached_logits = greedy_cached(model, ids, G)
        cached_ok = torch.equal(cached, greedy)
        patched, patched_logits = greedy_cached(model, ids, G, clamp_decode=True)
        patched_ok = torch.equal(patched, greedy)
        patched_dev = (patched_logits - step_logits).abs().max().item()
        assert patched_ok, f"{name} case{k}: cached decode with the clamp {patched.tolist()} != uncached {greedy.tolist()}"
        if not finite:
            assert cached_ok, f"{name} case{k}: no clamp, yet cached {cached.tolist()} != uncached {greedy.tolist()}"
        # first step where the cached token differs; logits comparable up to and including that step
        diff_steps = [j for j in range(G) if not torch.equal(cached[:, j], greedy[:, j])]
        first_div = diff_steps[0] if diff_steps else None
        upto = G if first_div is None else first_div + 1
        cached_dev = (cached_logits[:, :upto] - step_logits[:, :upto]).abs().max().item()
        n_logits, n_greedy = naive.run(ids, G)
        naive_dev = (logits.double() - n_logits).abs().max().item()
        naive_ok = torch.equal(n_greedy, greedy)
        assert naive_ok, f"{name} case{k}: naive f64 greedy {n_greedy.tolist()} != {greedy.tolist()}"
        mx = logits.abs().max().item()
        assert naive_dev <= 1e-4 * max(1.0, mx), f"{name} case{k}: naive f64 logits differ by {naive_dev}"
        max_abs = max(max_abs, mx)
        tensors[f"case{k}.ids"] = ids.contiguous()
        tensors[f"case{k}.logits"] = logits.contiguous()
        tensors[f"case{k}.greedy"] = greedy.contiguous()
        tensors[f"case{k}.greedy_logits"] = step_logits.contiguous()
        tensors[f"case{k}.greedy_cached"] = cached.contiguous()
        mcases.append({
            "case": k, "B": b, "L": l, "G": G,
            "max_abs_logit": round(mx, 4),
            "min_greedy_top2_margin": round(margin, 5),
            "greedy_cached_equals_uncached": cached_ok,
            "greedy_cached_first_divergent_step": first_div,
            "cached_vs_uncached_max_abs_logit_diff_until_divergence": float(f"{cached_dev:.3g}"),
            "greedy_cached_with_decode_clamp_equals_uncached": patched_ok,
            "cached_with_decode_clamp_max_abs_logit_diff": float(f"{patched_dev:.3g}"),
            "naive_f64_max_abs_logit_diff": float(f"{naive_dev:.3g}"),
            "naive_f64_greedy_equals_greedy": naive_ok,
            "prompt_redraws": attempt,
        })
        print(f"  case{k}: B={b} L={l:3d} max|logit|={mx:7.3f} margin={margin:.4f} naive-f64={naive_dev:.2e} "
              f"cached==uncached={cached_ok} (first div {first_div}, dlogit {cached_dev:.2e}) "
              f"clamped-cached==uncached={patched_ok} (dlogit {patched_dev:.2e}) greedy[0]={greedy[0].tolist()}")
    stats.close()
    return tensors, mcases, max_abs, stats.summary()


# --------------------------------------------------------------------------- checks / saving


def check_reload_hf(folder: Path, tensors, ncases):
    m = Mamba2ForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    worst = 0.0
    for k in range(ncases):
        got = full_logits(m, tensors[f"case{k}.ids"])
        diff = (got - tensors[f"case{k}.logits"]).abs().max().item()
        assert diff <= 1e-4, f"reloaded checkpoint in {folder} gives different logits (max diff {diff})"
        worst = max(worst, diff)
    return worst


def weights_info(folder: Path):
    dts, shapes = set(), {}
    for f in sorted(folder.glob("*.safetensors")):
        if f.name == "reference.safetensors":
            continue
        with safe_open(str(f), "pt") as h:
            for key in h.keys():
                sl = h.get_slice(key)
                dts.add(str(sl.get_dtype()))
                shapes[key] = list(sl.get_shape())
    return sorted(dts), dict(sorted(shapes.items()))


def limit_json(lim):
    """JSON has no infinity: +inf is written as null."""
    return [None if math.isinf(float(v)) else float(v) for v in lim]


def dims(cfg: Mamba2Config, vocab_in_weights: int):
    return {
        "d_model": cfg.hidden_size, "d_inner": cfg.num_heads * cfg.head_dim, "n_heads": cfg.num_heads,
        "head_dim": cfg.head_dim, "d_state": cfg.state_size, "n_groups": cfg.n_groups,
        "d_conv": cfg.conv_kernel, "chunk_size": cfg.chunk_size,
        "conv_dim": cfg.num_heads * cfg.head_dim + 2 * cfg.n_groups * cfg.state_size,
        "in_proj_out": 2 * cfg.num_heads * cfg.head_dim + 2 * cfg.n_groups * cfg.state_size + cfg.num_heads,
        "time_step_limit": limit_json(cfg.time_step_limit), "n_layer": cfg.num_hidden_layers,
        "vocab": vocab_in_weights, "config_vocab_size": cfg.vocab_size,
        "norm_before_gate": False, "rms_norm": True, "use_bias": cfg.use_bias,
        "use_conv_bias": cfg.use_conv_bias, "tied": cfg.tie_word_embeddings,
        "residual_in_fp32": cfg.residual_in_fp32, "layer_norm_epsilon": cfg.layer_norm_epsilon,
    }


def hf_fixture(out: Path, name, covers, cfg_kwargs, seed, cases):
    print(f"[mamba2/{name}]")
    model = build_model(make_config(**cfg_kwargs), seed)
    tensors, mcases, max_abs, dtstats = run_cases(model, cases, seed + 7, model.config.vocab_size, name)
    print(f"  dt clamp over the prompts: {dtstats}")
    folder = out / name
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    save_file(tensors, str(folder / "reference.safetensors"))
    reload_diff = check_reload_hf(folder, tensors, len(cases))
    print(f"  reload via Mamba2ForCausalLM.from_pretrained: max |logit diff| = {reload_diff:.2e}")
    dts, shapes = weights_info(folder)
    print(f"  max|logit| = {max_abs:.3f}; files: {sorted(p.name for p in folder.iterdir())}; dtypes {dts}")
    return {
        "name": name, "folder": name, "covers": covers, "spelling": "hf",
        "dims": dims(model.config, model.config.vocab_size),
        "weight_dtype": dts[0] if len(dts) == 1 else dts,
        "checkpoint_files": sorted(p.name for p in folder.iterdir() if p.name != "reference.safetensors"),
        "weight_shapes": shapes,
        "model_seed": seed, "prompt_seed": seed + 7,
        "max_abs_logit": round(max_abs, 4),
        "dt_clamp": dtstats,
        "cases": mcases,
    }


def state_spaces_fixture(out: Path, name, covers, seed, cases):
    print(f"[mamba2/{name}]")
    d_model, n_layer, vocab, mult = 32, 3, 100, 8
    padded = ((vocab + mult - 1) // mult) * mult  # 104
    ssm_cfg = {"layer": "Mamba2", "d_state": 16, "d_conv": 4, "expand": 2, "headdim": 16, "ngroups": 1,
               "chunk_size": 16}
    # mamba_ssm Mamba2 defaults otherwise: norm_before_gate False, dt_limit (0, inf), bias False,
    # conv_bias True, RMSNorm eps 1e-5 (blocks, norm_f and the gated norm)
    cfg_kwargs = dict(vocab_size=padded, hidden_size=d_model, num_hidden_layers=n_layer,
                      num_heads=2 * d_model // 16, head_dim=16, expand=2, n_groups=1, state_size=16,
                      conv_kernel=4, chunk_size=16, time_step_limit=(0.0, float("inf")), use_bias=False,
                      use_conv_bias=True, tie_word_embeddings=True, residual_in_fp32=True,
                      layer_norm_epsilon=1e-5)
    model = build_model(make_config(**cfg_kwargs), seed)
    with torch.no_grad():  # padding rows of the (tied) embedding: zeros (never used as inputs)
        model.backbone.embeddings.weight[vocab:].zero_()
    tensors, mcases, max_abs, dtstats = run_cases(model, cases, seed + 7, vocab, name)
    folder = out / name
    folder.mkdir(parents=True)
    sd = {}
    for k, v in model.state_dict().items():
        k2 = k.replace("backbone.embeddings.weight", "backbone.embedding.weight")
        sd[k2] = v.detach().clone().contiguous()
    sd["lm_head.weight"] = sd["backbone.embedding.weight"].clone()
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ss_cfg = {"d_model": d_model, "n_layer": n_layer, "vocab_size": vocab, "ssm_cfg": ssm_cfg,
              "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
              "pad_vocab_size_multiple": mult, "tie_embeddings": True}
    (folder / "config.json").write_text(json.dumps(ss_cfg, indent=2) + "\n")
    save_file(tensors, str(folder / "reference.safetensors"))
    # sanity: rename back, load strictly into a fresh HF model, same logits
    back = load_file(str(folder / "model.safetensors"))
    assert torch.equal(back["lm_head.weight"], back["backbone.embedding.weight"])
    assert back["backbone.embedding.weight"].shape == (padded, d_model)
    back["backbone.embeddings.weight"] = back.pop("backbone.embedding.weight")
    m2 = Mamba2ForCausalLM(make_config(**cfg_kwargs)).float().eval()
    m2.load_state_dict(back, strict=True)
    for k in range(len(cases)):
        assert torch.equal(full_logits(m2, tensors[f"case{k}.ids"]), tensors[f"case{k}.logits"])
    dts, shapes = weights_info(folder)
    print(f"  max|logit| = {max_abs:.3f}; files: {sorted(p.name for p in folder.iterdir())}")
    d = dims(model.config, padded)
    d["config_vocab_size"] = vocab
    return {
        "name": name, "folder": name, "covers": covers, "spelling": "state-spaces",
        "dims": d, "weight_dtype": dts[0],
        "checkpoint_files": ["config.json", "model.safetensors"], "weight_shapes": shapes,
        "model_seed": seed, "prompt_seed": seed + 7, "max_abs_logit": round(max_abs, 4),
        "prompt_ids_below": vocab, "dt_clamp": dtstats,
        "cases": mcases,
    }


def generate_mamba2(out: Path) -> None:
    """Writes every Mamba-2 fixture + manifest.json into `out` (which must not exist)."""
    check_gated_norm_per_group()
    out.mkdir(parents=True)
    inf = float("inf")
    g1_small = dict(vocab_size=64, hidden_size=32, expand=2, num_heads=4, head_dim=16, n_groups=1, state_size=8,
                    conv_kernel=4, chunk_size=8, time_step_limit=(0.0, inf), tie_word_embeddings=True,
                    use_bias=False)
    groups2 = dict(vocab_size=150, hidden_size=36, expand=2, num_heads=6, head_dim=12, n_groups=2, state_size=32,
                   conv_kernel=3, chunk_size=16, time_step_limit=(0.01, 0.2), tie_word_embeddings=False,
                   use_bias=True)
    groups3 = dict(vocab_size=120, hidden_size=48, expand=2, num_heads=12, head_dim=8, n_groups=3, state_size=40,
                   conv_kernel=4, chunk_size=64, time_step_limit=(0.0, 0.1), tie_word_embeddings=True,
                   use_bias=False, norm_before_gate=False)
    fx = [
        hf_fixture(out, "g1_small",
                   "1 group, head_dim 16, d_state 8, chunk 8: prompts of 1, < chunk, = chunk, chunk+1, several "
                   "chunks + remainder, exact multiple; no dt clamp (0, inf); tied; batch 2",
                   g1_small, SEED + 1100, [(1, 1), (1, 7), (1, 8), (1, 9), (1, 29), (1, 40), (2, 19)]),
        hf_fixture(out, "groups2_hd12",
                   "2 groups (3 heads each, per-group gated norm), head_dim 12 (not a power of two), d_state 32, "
                   "d_conv 3, chunk 16, finite time_step_limit (0.01, 0.2) binding at both ends, untied, "
                   "in_proj/out_proj biases; batch 2",
                   groups2, SEED + 1200, [(1, 1), (1, 2), (1, 15), (1, 16), (1, 17), (1, 50), (2, 33)]),
        hf_fixture(out, "groups3_chunk64",
                   "3 groups (4 heads each), head_dim 8, d_state 40 (not a power of two), chunk 64, "
                   "time_step_limit (0, 0.1) binding at the max, tied, norm_before_gate false; batch 2",
                   groups3, SEED + 1300, [(1, 1), (1, 63), (1, 64), (1, 65), (1, 150), (2, 20)]),
        state_spaces_fixture(out, "state_spaces",
                             "original state-spaces/mamba_ssm spelling (config d_model/ssm_cfg with layer "
                             "Mamba2, backbone.embedding.weight, vocab 100 padded to 104, lm_head.weight stored "
                             "too); logits have 104 columns", SEED + 1400, [(1, 1), (1, 37)]),
    ]
    manifest = {
        "description": "Mamba-2 reference fixtures generated by scripts/gen_fixtures.py (scripts/gen_fixtures_mamba2.py) "
                       "from transformers' Mamba2ForCausalLM (CPU, float32, pure-torch path: no mamba_ssm, "
                       "causal_conv1d or kernels installed), cross-checked against a naive float64 recurrence.",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__},
        "seed": SEED,
        "greedy_tokens": G,
        "greedy_notes": GREEDY_NOTES,
        "semantics": SEMANTICS,
        "gated_norm_patched": False,
        "time_step_limit_json": "null in this manifest means +inf; transformers' save_pretrained writes +inf in "
                                "config.json as {\"__float__\": \"Infinity\"}",
        "reference_tensors": {
            "case{k}.ids": "int64 [B, L]",
            "case{k}.logits": "float32 [B, L, V] model(ids, use_cache=False).logits",
            "case{k}.greedy": "int64 [B, G] uncached greedy (full forward per step, argmax of the last logits)",
            "case{k}.greedy_logits": "float32 [B, G, V] full-forward last-position logits whose argmax is greedy[:, j]",
            "case{k}.greedy_cached": "int64 [B, G] generate(do_sample=False, use_cache=True), information only",
        },
        "fixtures": fx,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1024:.1f} KiB)")
