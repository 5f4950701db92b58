// mamba_wgpu.stream_read_tex: the texture twin of mamba_wgpu.stream_read, a bandwidth probe.
// Streams a 2-D rgba32float texture once with textureLoad and sums it, so its time is the
// device's read bandwidth for texture-stored weights (what linear_tex streams on CPU adapters),
// with the sum as a check that every texel was read exactly once.
//
// Bindings: 0 params (uniform); 1 data rgba32float read-only storage texture, `width` texels
//           per line;
//           2 partial f32 [groups * 256] (read_write).
// Params:   len: texels to read (the first `len` in line order), width: texels per line.
// Geometry: `groups` workgroups of 256 invocations in x (groups <= 65,535), any groups >= 1.
// Math:     with T = groups * 256 invocations, invocation t reads texels t, t + T, ... (texel i at
//           (i % width, i / width): neighbouring invocations read neighbouring texels), sums
//           the four lanes in f32 and writes
//           partial[t] = sum over i < len with i mod T == t of dot(texel i, (1, 1, 1, 1)),
//           with no workgroup reduction (see mamba_wgpu.stream_read).

struct Params {
    len: u32,
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var data: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let total = nwg.x * WG;
    let width = params.width;
    let t = wg.x * WG + lid;
    var acc = vec4<f32>(0.0);
    // No barrier: the trip count may differ between invocations, and each writes its own sum.
    for (var i = t; i < params.len; i += total) {
        acc += textureLoad(data, vec2<u32>(i % width, i / width));
    }
    partial[t] = acc.x + acc.y + acc.z + acc.w;
}
