// mamba_wgpu.embedding: embedding gather for one page of the table.
//
// Bindings: 0 params (uniform); 1 ids u32 [tokens] (read);
//           2 table [rows, dim] f32, this page's rows (read as u32 bit patterns);
//           3 out [tokens, dim] f32 (written as u32 bit patterns).
// Params:   tokens, dim, row_start (first vocabulary row of this page), rows (rows in this
//           page); all u32, 16 bytes.
// Geometry: one workgroup of 64 invocations per (token, chunk of CHUNK = 256 columns), linear
//           index t·ceil(dim/CHUNK) + chunk, folded into (x, y) as wg.x + wg.y·num_workgroups.x.
//           Invocation lid copies columns chunk·CHUNK + r·64 + lid, r < 4: adjacent invocations
//           touch adjacent columns (coalesced), and each reads its token's id once.
// Math:     out[t·dim + i] = table[(ids[t] - row_start)·dim + i] when
//           row_start <= ids[t] < row_start + rows; other tokens' rows are left untouched, so a
//           table split into pages is gathered with one dispatch per page into the same `out`.
// The copy moves raw bits (u32), so it is exact whatever the GPU does with denormals or NaNs.

struct Params {
    tokens: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const WG: u32 = 64u;
const PER_INVOCATION: u32 = 4u;
// Columns per workgroup; must equal `COLUMNS_PER_WORKGROUP` in src/kernels/embedding.rs.
const CHUNK: u32 = WG * PER_INVOCATION;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let dim = params.dim;
    let chunks = max((dim + CHUNK - 1u) / CHUNK, 1u);
    let linear = wg.x + wg.y * nwg.x;
    let t = linear / chunks;
    // The fold may round the group count up: skip groups past the last token.
    if (t >= params.tokens) {
        return;
    }
    let id = ids[t];
    // Two comparisons rather than one wrapping subtraction, so no row_start/rows can alias.
    if (id < params.row_start || id - params.row_start >= params.rows) {
        return;
    }
    let src = (id - params.row_start) * dim;
    let dst = t * dim;
    let first = (linear % chunks) * CHUNK + lid;
    for (var r = 0u; r < PER_INVOCATION; r++) {
        let i = first + r * WG;
        if (i < dim) {
            out[dst + i] = table[src + i];
        }
    }
}
