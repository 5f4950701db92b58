// mamba_wgpu.stream_read: a bandwidth probe. Streams a buffer once and sums it, so its time is
// the device's own read bandwidth (the limit a decode step's weight streaming is measured
// against), with the sum as a check that every element was read exactly once.
//
// Bindings: 0 params (uniform); 1 data vec4<f32> [len] (read); 2 partial f32 [groups * 256]
//           (read_write).
// Params:   len: vec4 elements of data.
// Geometry: `groups` workgroups of 256 invocations in x (groups <= 65,535; the host tries a few
//           loads-per-invocation counts and keeps the fastest), any groups >= 1 is correct.
// Math:     with T = groups * 256 invocations, invocation t reads data[t], data[t + T], ... (grid
//           stride: neighbouring invocations read neighbouring 16-byte elements, so every load is
//           coalesced and every element is read once), sums the four lanes in f32 and writes
//           partial[t] = sum over i with i mod T == t of dot(data[i], (1, 1, 1, 1)).
//           The host adds the partials. There is no workgroup reduction: on CPU adapters its
//           barriers cost a third of the probe's time (6.5 GB/s with a tree, 10 without on
//           lavapipe), and a probe that reads slower than the kernels it bounds says nothing.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> data: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let total = nwg.x * WG;
    let t = wg.x * WG + lid;
    var acc = vec4<f32>(0.0);
    // No barrier: the trip count may differ between invocations, and each writes its own sum.
    for (var i = t; i < params.len; i += total) {
        acc += data[i];
    }
    partial[t] = acc.x + acc.y + acc.z + acc.w;
}
