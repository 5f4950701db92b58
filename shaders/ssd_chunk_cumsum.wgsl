// mamba_wgpu.ssd_chunk_cumsum: Mamba-2 SSD step 1, the processed step dt and the within-chunk
// cumulative sum of dt·A, per (sequence, head, chunk).
//
// Bindings: 0 params (uniform);
//           1 dt_raw f32 rows, head h of row r at dt_raw[dt_offset + r*dt_stride + h] (read; a
//             column slice of the in_proj output);
//           2 heads f32 [3H] packed: A_log[h] at h, D[h] at H + h, dt_bias[h] at 2H + h (read);
//           3 dt   f32 [batch, H, len] (written), index (b*H + h)*len + t;
//           4 dacs f32 [batch, H, len] (written), same layout.
//           Row r = b*len + t; chunk c holds tokens c*Q .. min(c*Q + Q, len) - 1.
// Params:   8 x 4 bytes (32 bytes), mirrored by `SsdChunkCumsumParams`.
// Geometry: one workgroup of 64 invocations per (b, h, c): batch*H*nchunks workgroups folded into
//           (x, y), linear index ((b*H + h)*nchunks + c). The chunk is walked in tiles of 256
//           tokens (any Q works; Q <= 256 is one tile) with the running sum carried between tiles.
// Math:     dt_t = clamp(softplus(dt_raw + dt_bias[h]), dt_min, dt_max)   (softplus threshold 20)
//           a_t = dt_t * A_h, A_h = -exp(A_log[h]);  dacs_t = sum_{s in chunk, s <= t} a_s.
// Scan:     each invocation owns 4 consecutive tokens of the tile (serial prefix over its 4),
//           then a Hillis-Steele inclusive scan of the 64 invocation totals (6 steps, ping-pong
//           halves, one barrier each) gives each invocation the sum of the tokens before it.
//           Loads and stores go through workgroup memory with token = lid + 64k so that the dt
//           and dacs writes are coalesced (the dt_raw reads are strided by the row width in any
//           order: one float per in_proj row).

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

const WG: u32 = 64u;
const ITEMS: u32 = 4u;
const TILE: u32 = 256u; // WG * ITEMS tokens per pass

// Workgroup memory: (256 + 128) * 4 = 1,536 bytes.
var<workgroup> a_tile: array<f32, TILE>; // dt*A of the tile, then its inclusive prefix sums
var<workgroup> scan: array<f32, 128>;    // two ping-pong halves of WG totals

// torch's softplus (threshold 20), accurate to a few ulp for every input. WGSL has no log1p,
// and log near 1 is only specified to an absolute 2^-21 (Vulkan), far too coarse for
// log(1 + e) with small e = exp(v) (dt of 1e-3 and below is common). So for e < 1/16,
// log1p(e) by its alternating series to e^7 (the first omitted term is below e^8/8, a relative
// 5e-10 at e = 1/16; tiny e give e itself, so very negative v stay accurate), and log(1 + e)
// above, where log(1 + e) >= 0.06 makes that absolute error a relative 8e-6 at worst.
fn softplus(v: f32) -> f32 {
    if (v > 20.0) {
        return v;
    }
    let e = exp(v);
    if (e < 0.0625) {
        let tail = 0.25 - e * (0.2 - e * (1.0 / 6.0 - e / 7.0)); // 1/4 - e/5 + e²/6 - e³/7
        return e * (1.0 - e * (0.5 - e * (1.0 / 3.0 - e * tail)));
    }
    return log(1.0 + e);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let len = params.len;
    let nh = params.nheads;
    let q = params.chunk;
    let nchunks = (len + q - 1u) / q;
    let group = wg.x + wg.y * nwg.x;
    // `group` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (group >= params.batch * nh * nchunks) {
        return;
    }
    let c = group % nchunks;
    let bh = group / nchunks; // b*H + h
    let h = bh % nh;
    let b = bh / nh;
    let a_h = -exp(heads[h]);
    let bias = heads[2u * nh + h];
    let start = c * q;
    let end = min(start + q, len);
    let base = bh * len;

    var carry = 0.0;
    for (var t0 = start; t0 < end; t0 += TILE) {
        // The previous tile's readers of a_tile (the dacs stores and the carry) are done.
        workgroupBarrier();
        for (var k = 0u; k < ITEMS; k++) {
            let i = lid + k * WG;
            let t = t0 + i;
            var a = 0.0; // past the chunk: identity of the sum
            if (t < end) {
                let v = dt_raw[params.dt_offset + (b * len + t) * params.dt_stride + h];
                let d = min(max(softplus(v + bias), params.dt_min), params.dt_max);
                dt[base + t] = d;
                a = d * a_h;
            }
            a_tile[i] = a;
        }
        workgroupBarrier();

        // Serial inclusive prefix over this invocation's 4 consecutive tokens.
        var local: array<f32, ITEMS>;
        var run = 0.0;
        for (var k = 0u; k < ITEMS; k++) {
            run += a_tile[lid * ITEMS + k];
            local[k] = run;
        }
        // Inclusive scan of the 64 totals. Step k reads half p and writes half 1 - p; the
        // barrier after each write also retires the reads of the step before.
        var p = 0u;
        var acc = run;
        scan[lid] = acc;
        workgroupBarrier();
        for (var off = 1u; off < WG; off <<= 1u) {
            if (lid >= off) {
                acc += scan[p * WG + lid - off];
            }
            p = 1u - p;
            scan[p * WG + lid] = acc;
            workgroupBarrier();
        }
        var before = carry;
        if (lid > 0u) {
            before += scan[p * WG + lid - 1u];
        }
        // Only this invocation read these 4 elements above, so no barrier is needed first.
        for (var k = 0u; k < ITEMS; k++) {
            a_tile[lid * ITEMS + k] = before + local[k];
        }
        workgroupBarrier();
        for (var k = 0u; k < ITEMS; k++) {
            let i = lid + k * WG;
            if (t0 + i < end) {
                dacs[base + t0 + i] = a_tile[i];
            }
        }
        // Padding past the chunk added zeros, so the tile's last entry is the running total.
        carry = a_tile[TILE - 1u];
    }
}
