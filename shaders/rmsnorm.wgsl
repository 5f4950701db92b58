// mamba_wgpu.rmsnorm: residual add fused with RMSNorm.
//
// Bindings: 0 params (uniform); 1 residual f32 [rows, cols] (read_write);
//           2 delta f32 [rows, cols] (read); 3 weight f32 [cols]; 4 out f32 [rows, cols].
// Geometry: one workgroup of WG invocations per row; rows may be folded into (x, y) groups.
//           WG (a power of two) comes from a Rust-side size header (src/kernels/rmsnorm.rs):
//           256 on GPUs; 8 on CPU adapters, where a workgroup is one SIMD batch on one thread
//           and each barrier a switch between batches (a 768-wide decode norm: ~100 us as
//           32 batches with 9 barriers, ~50 us as one batch with 4).
// Math:     if add != 0 { residual += delta }   (the residual stream stays f32)
//           out = residual * inverseSqrt(mean(residual^2) + eps) * weight
// The add is written back so the next layer reads the updated residual.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    add: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> residual: array<f32>;
@group(0) @binding(2) var<storage, read> delta: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    // `row` is uniform across the workgroup, so returning here keeps barriers uniform.
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    var sum = 0.0;
    for (var c = lid; c < params.cols; c += WG) {
        var v = residual[base + c];
        if (params.add != 0u) {
            v += delta[base + c];
            residual[base + c] = v;
        }
        sum += v * v;
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(params.cols) + params.eps);
    for (var c = lid; c < params.cols; c += WG) {
        out[base + c] = residual[base + c] * inv * weight[c];
    }
}
