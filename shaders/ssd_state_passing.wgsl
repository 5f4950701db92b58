// mamba_wgpu.ssd_state_passing: Mamba-2 SSD step 3, the state entering each chunk, a short
// sequential recurrence over the chunks of a sequence, in place.
//
// Bindings: 0 params (uniform);
//           1 dacs   f32 [batch, H, len] (read), index (b*H + h)*len + t;
//           2 states f32 [batch, nchunks, H, P, N] (read_write): each chunk's own state S_c in,
//             the state entering the chunk S'_c out; nchunks = ceil(len / Q);
//           3 state  f32 [batch, H, P, N] (read_write): the initial state in, the final one out.
// Params:   8 x 4 bytes (32 bytes), mirrored by `SsdStatePassingParams`.
// Geometry: one workgroup of 256 invocations per (b, h, block of 256 state elements e = p*N + n):
//           batch*H*ceil(P*N/256) workgroups folded into (x, y), linear index
//           (b*H + h)*ceil(P*N/256) + block. One invocation per element, coalesced over e.
// Math:     S'_0 = state;  S'_{c+1} = exp(dacs_last(c)) * S'_c + S_c;  state = S'_nchunks,
//           dacs_last(c) = dacs of chunk c's last token (the chunk's total dt*A, so
//           exp(dacs_last) is the decay across the whole chunk). nchunks steps per element.
//           The decays of up to 256 chunks are computed once per workgroup into workgroup
//           memory rather than read by every invocation.

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

const WG: u32 = 256u;

// Workgroup memory: 256 * 4 = 1,024 bytes.
var<workgroup> decay: array<f32, WG>; // exp(dacs_last) of chunks cb .. cb + 255

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let len = params.len;
    let nh = params.nheads;
    let q = params.chunk;
    let nchunks = (len + q - 1u) / q;
    let pn = params.head_dim * params.d_state;
    let blocks = (pn + WG - 1u) / WG;
    let group = wg.x + wg.y * nwg.x;
    // `group` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (group >= params.batch * nh * blocks) {
        return;
    }
    let bh = group / blocks; // b*H + h
    let h = bh % nh;
    let b = bh / nh;
    let e = (group % blocks) * WG + lid;
    let on = e < pn;
    let sidx = bh * pn + e;
    var s = 0.0;
    if (on) {
        s = state[sidx];
    }
    for (var cb = 0u; cb < nchunks; cb += WG) {
        // The previous block's readers of `decay` are done.
        workgroupBarrier();
        let c = cb + lid;
        if (c < nchunks) {
            let last = min(c * q + q, len) - 1u;
            decay[lid] = exp(dacs[bh * len + last]);
        }
        workgroupBarrier();
        let count = min(WG, nchunks - cb);
        for (var k = 0u; k < count; k++) {
            if (on) {
                let idx = ((b * nchunks + cb + k) * nh + h) * pn + e;
                let own = states[idx];
                states[idx] = s;
                s = decay[k] * s + own;
            }
        }
    }
    if (on) {
        state[sidx] = s;
    }
}
