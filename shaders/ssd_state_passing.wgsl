// mamba_wgpu.ssd_state_passing: PLACEHOLDER, to be written.

struct Params {
    batch: u32,
    len: u32,
    nheads: u32,
    head_dim: u32,
    d_state: u32,
    chunk: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dacs: array<f32>;
@group(0) @binding(2) var<storage, read_write> states: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &dacs;
    _ = &states;
    _ = &state;
}
