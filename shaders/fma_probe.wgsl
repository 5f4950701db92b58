// mamba_wgpu.fma_probe: an arithmetic-rate probe. Every invocation runs `iters` rounds of 8
// independent vec4 multiply-adds held in registers (no memory traffic in the loop), so the
// time is the device's register FMA rate, the ceiling the matmul kernels are judged against.
//
// Bindings: 0 params (uniform); 1 out f32 [groups * 256] (read_write), one sum per invocation.
// Params:   iters: rounds; seed: a starting value (kept runtime so nothing folds at compile time).
// Geometry: `groups` workgroups of 256 invocations in x.
// Math:     a_j <- a_j * m + c for j < 8 (m = 0.999999, c = 1e-6, so the values stay near 1),
//           out[t] = the sum of the 32 lanes after `iters` rounds: 8 · 4 · 2 FLOPs per round.

struct Params {
    iters: u32,
    seed: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = params.seed + f32(gid.x & 7u) * 1e-3;
    var a0 = vec4<f32>(s, s + 0.01, s + 0.02, s + 0.03);
    var a1 = a0 + 0.1;
    var a2 = a0 + 0.2;
    var a3 = a0 + 0.3;
    var a4 = a0 + 0.4;
    var a5 = a0 + 0.5;
    var a6 = a0 + 0.6;
    var a7 = a0 + 0.7;
    let m = vec4<f32>(0.999999);
    let c = vec4<f32>(1e-6);
    for (var i = 0u; i < params.iters; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    let t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    out[gid.x] = t.x + t.y + t.z + t.w;
}
