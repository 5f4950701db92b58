// mamba_wgpu.selective_state_update: PLACEHOLDER, to be written.

struct Params {
    batch: u32,
    len: u32,
    d_inner: u32,
    d_state: u32,
    dt_offset: u32,
    dt_stride: u32,
    bc_offset: u32,
    bc_stride: u32,
    x_offset: u32,
    x_stride: u32,
    z_offset: u32,
    z_stride: u32,
    y_stride: u32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dt: array<f32>;
@group(0) @binding(2) var<storage, read> bc: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> ssm: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &dt;
    _ = &bc;
    _ = &x;
    _ = &z;
    _ = &ssm;
    _ = &state;
    _ = &y;
}
