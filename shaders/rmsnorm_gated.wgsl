// mamba_wgpu.rmsnorm_gated: Mamba-2's gated RMSNorm, normalised per group of columns.
//
// Bindings: 0 params (uniform); 1 y f32 [rows, cols] (read);
//           2 z f32 gate rows at z[z_offset + r*z_stride + c] (read; a column slice of in_proj);
//           3 weight f32 [cols]; 4 out f32 [rows, cols] (read_write: also the kernel's scratch).
//           cols = group * n_groups; group k of a row is columns k*group .. (k+1)*group.
// Params:   8 x 4 bytes, mirrored by `RmsnormGatedParams` in src/kernels/rmsnorm_gated.rs.
// Geometry: one workgroup of WG invocations per (row, group), rows * (cols / group) workgroups
//           folded into (x, y); invocations stride over the group's columns. WG (a power of
//           two) comes from a Rust-side size header (src/kernels/rmsnorm_gated.rs): 256 on
//           GPUs, 8 (one SIMD batch) on CPU adapters, as for mamba_wgpu.rmsnorm.
// Math:     silu(v) = v / (1 + exp(-v)), g = y * silu(z);
//           norm_before_gate = 0 (Mamba-2's default): out = g / sqrt(mean_group(g^2) + eps) * weight
//           norm_before_gate = 1:                     out = g / sqrt(mean_group(y^2) + eps) * weight
//           (the second is y / rms(y) * weight * silu(z) with the gate multiplied first).
// The first pass writes g to `out` and the second scales it in place, so y and z are read once
// (storage loads are the slow part on CPU implementations); each invocation rereads only the
// elements it wrote itself, which needs no barrier.

struct Params {
    rows: u32,
    cols: u32,
    group: u32,
    eps: f32,
    z_offset: u32,
    z_stride: u32,
    norm_before_gate: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Partial sums after the first level (WG / PARTS each).
const PARTS: u32 = min(16u, WG);

// (WG + PARTS) * 4 bytes of workgroup memory (1,088 at WG = 256).
var<workgroup> partial: array<f32, WG>;
var<workgroup> partial16: array<f32, PARTS>;

// v * sigmoid(v) with exp of a non-positive argument only, so large |v| never overflows.
fn silu(v: f32) -> f32 {
    let e = exp(-abs(v));
    let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
    return v * sig;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = params.group;
    let groups = params.cols / group;
    let index = wg.x + wg.y * nwg.x;
    // `index` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (index >= params.rows * groups) {
        return;
    }
    let r = index / groups;
    let c0 = (index % groups) * group;
    let base = r * params.cols + c0;
    let z_base = params.z_offset + r * params.z_stride + c0;
    let before = params.norm_before_gate != 0u;

    var sum = 0.0;
    for (var i = lid; i < group; i += WG) {
        let yv = y[base + i];
        let g = yv * silu(z[z_base + i]);
        out[base + i] = g;
        let m = select(g, yv, before);
        sum += m * m;
    }
    // Two-level sum (PARTS invocations add WG / PARTS partials each, then every invocation
    // adds the PARTS sums): two barriers instead of a log2(WG)-step tree.
    partial[lid] = sum;
    workgroupBarrier();
    if (lid < PARTS) {
        var s = 0.0;
        for (var j = 0u; j < WG / PARTS; j++) {
            s += partial[lid * (WG / PARTS) + j];
        }
        partial16[lid] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var j = 0u; j < PARTS; j++) {
        total += partial16[j];
    }
    let inv = inverseSqrt(total / f32(group) + params.eps);
    for (var i = lid; i < group; i += WG) {
        out[base + i] = out[base + i] * inv * weight[c0 + i];
    }
}
