// mamba_wgpu.sample: PLACEHOLDER, to be written.

struct Params {
    batch: u32,
    vocab: u32,
    logits_offset: u32,
    logits_stride: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    seed: u32,
    out_offset: u32,
    out_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> steps: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = params;
    _ = &logits;
    _ = &steps;
    _ = &out;
}
