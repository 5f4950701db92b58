// mamba_wgpu.conv1d_step: PLACEHOLDER, to be written.

struct Params {
    batch: u32,
    len: u32,
    channels: u32,
    kernel: u32,
    x_offset: u32,
    x_stride: u32,
    out_stride: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &x;
    _ = &weight;
    _ = &bias;
    _ = &state;
    _ = &out;
}
