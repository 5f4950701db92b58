// mamba_wgpu.rmsnorm_gated: PLACEHOLDER, to be written.

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &y;
    _ = &z;
    _ = &weight;
    _ = &out;
}
