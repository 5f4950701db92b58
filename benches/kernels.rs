//! Kernel benches at mamba-130m's shapes (d_model 768, d_inner 1536, d_state 16, dt_rank 48).
//! Wall clock around one submit and a device wait per iteration (GPU timestamp queries and the
//! device's own copy bandwidth come with the speed issue). Throughput is reported in bytes of
//! weights streamed (GEMV) or FLOPs as elements (matmul: 2·m·n·k "elements" = FLOPs).
//!
//! `cargo bench --bench kernels`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mamba_wgpu::kernels::conv1d::{Conv1d, Conv1dBuffers, Conv1dParams};
use mamba_wgpu::kernels::gemv::Gemv;
use mamba_wgpu::kernels::matmul::{Matmul, MatmulBuffers, MatmulParams};
use mamba_wgpu::kernels::selective_scan::{
    SelectiveScan, SelectiveScanBuffers, SelectiveScanParams,
};
use mamba_wgpu::kernels::{run, Dispatch};
use mamba_wgpu::GpuContext;

const D: u32 = 768;
const E: u32 = 1536;
const N: u32 = 16;
const R: u32 = 48;

fn buf(ctx: &GpuContext, len: usize, v: f32) -> wgpu::Buffer {
    ctx.storage_buffer_init("bench", &vec![v; len]).unwrap()
}

fn time(
    c: &mut Criterion,
    group: &str,
    name: &str,
    tp: Throughput,
    ctx: &GpuContext,
    d: &Dispatch,
) {
    run(ctx, &[d]).unwrap(); // warm-up: drivers may compile at the first dispatch
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(tp);
    g.bench_function(name, |b| b.iter(|| run(ctx, &[d]).unwrap()));
    g.finish();
}

fn benches(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("a GPU adapter (or lavapipe)");
    eprintln!("adapter: {}", ctx.adapter_name());

    // GEMV: one decode step of in_proj (3072 × 768).
    let (n, k) = (2 * E, D);
    let (x, w, y) = (
        buf(&ctx, k as usize, 0.01),
        buf(&ctx, (n * k) as usize, 0.01),
        buf(&ctx, n as usize, 0.0),
    );
    let p = MatmulParams {
        m: 1,
        n,
        k,
        x_stride: k,
        y_stride: n,
        ..Default::default()
    };
    let d = Gemv::new(&ctx).unwrap().bind(
        &ctx,
        &p,
        MatmulBuffers {
            x: &x,
            w: &w,
            bias: &x,
            y: &y,
        },
    );
    time(
        c,
        "gemv",
        "in_proj_3072x768_m1",
        Throughput::Bytes((n * k * 4) as u64),
        &ctx,
        &d,
    );

    // Matmul: a 128-token prefill of in_proj.
    let m = 128;
    let (xm, ym) = (
        buf(&ctx, (m * k) as usize, 0.01),
        buf(&ctx, (m * n) as usize, 0.0),
    );
    let p = MatmulParams {
        m,
        n,
        k,
        x_stride: k,
        y_stride: n,
        ..Default::default()
    };
    let d = Matmul::new(&ctx).unwrap().bind(
        &ctx,
        &p,
        MatmulBuffers {
            x: &xm,
            w: &w,
            bias: &xm,
            y: &ym,
        },
    );
    time(
        c,
        "matmul",
        "in_proj_128x3072x768",
        Throughput::Elements(2 * (m * n * k) as u64),
        &ctx,
        &d,
    );

    // Causal conv1d over 128 tokens of x (stride 2·d_inner, as in the model).
    let l = 128u32;
    let xz = buf(&ctx, (l * 2 * E) as usize, 0.1);
    let (cw, cb, cs, out) = (
        buf(&ctx, (E * 4) as usize, 0.2),
        buf(&ctx, E as usize, 0.0),
        buf(&ctx, (E * 3) as usize, 0.0),
        buf(&ctx, (l * E) as usize, 0.0),
    );
    let p = Conv1dParams {
        batch: 1,
        len: l,
        channels: E,
        kernel: 4,
        x_offset: 0,
        x_stride: 2 * E,
        out_stride: E,
        has_bias: 1,
    };
    let d = Conv1d::new(&ctx).unwrap().bind(
        &ctx,
        &p,
        Conv1dBuffers {
            x: &xz,
            weight: &cw,
            bias: &cb,
            state: &cs,
            out: &out,
        },
    );
    time(
        c,
        "conv1d",
        "prefill_128x1536_k4",
        Throughput::Bytes((l * E * 8) as u64),
        &ctx,
        &d,
    );

    // Selective scan over 128 tokens.
    let dbc = buf(&ctx, (l * (R + 2 * N)) as usize, 0.1);
    let dt = buf(&ctx, (l * E) as usize, -2.0);
    let ssm = buf(&ctx, (E * N + 2 * E) as usize, 0.5);
    let state = buf(&ctx, (E * N) as usize, 0.0);
    let yb = buf(&ctx, (l * E) as usize, 0.0);
    let p = SelectiveScanParams {
        batch: 1,
        len: l,
        d_inner: E,
        d_state: N,
        dt_stride: E,
        bc_offset: R,
        bc_stride: R + 2 * N,
        x_stride: E,
        z_offset: E,
        z_stride: 2 * E,
        y_stride: E,
        flags: 3,
        ..Default::default()
    };
    let d = SelectiveScan::new(&ctx).unwrap().bind(
        &ctx,
        &p,
        SelectiveScanBuffers {
            dt: &dt,
            bc: &dbc,
            x: &out,
            z: &xz,
            ssm: &ssm,
            state: &state,
            y: &yb,
        },
    );
    time(
        c,
        "selective_scan",
        "prefill_128x1536_n16",
        Throughput::Elements((l * E * N) as u64),
        &ctx,
        &d,
    );
}

criterion_group!(kernels, benches);
criterion_main!(kernels);
