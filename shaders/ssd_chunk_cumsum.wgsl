// mamba_wgpu.ssd_chunk_cumsum: PLACEHOLDER, to be written.

struct Params {
    batch: u32,
    len: u32,
    nheads: u32,
    chunk: u32,
    dt_offset: u32,
    dt_stride: u32,
    dt_min: f32,
    dt_max: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dt_raw: array<f32>;
@group(0) @binding(2) var<storage, read> heads: array<f32>;
@group(0) @binding(3) var<storage, read_write> dt: array<f32>;
@group(0) @binding(4) var<storage, read_write> dacs: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &dt_raw;
    _ = &heads;
    _ = &dt;
    _ = &dacs;
}
