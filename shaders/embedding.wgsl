// mamba_wgpu.embedding: PLACEHOLDER, to be written.

struct Params {
    tokens: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &ids;
    _ = &table;
    _ = &out;
}
