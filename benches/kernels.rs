//! Kernel benches at mamba-130m's shapes (d_model 768, d_inner 1536, d_state 16, dt_rank 48).
//! Each sample records its iterations as back-to-back dispatches of one compute pass and times
//! the pass with GPU timestamps where the device has them (else wall clock around the one
//! submit and its wait). Throughput is reported in bytes of weights streamed (GEMV) or FLOPs as
//! elements (matmul: 2·m·n·k "elements" = FLOPs). The `device` group measures the limits the
//! kernels are judged against: `copy_buffer_to_buffer` (read + write bytes) and the
//! `stream_read` and `stream_read_tex` probes (bytes read from a storage buffer, a texture).
//!
//! `cargo bench --bench kernels`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mamba_wgpu::kernels::conv1d::{Conv1d, Conv1dBuffers, Conv1dParams};
use mamba_wgpu::kernels::gemv::Gemv;
use mamba_wgpu::kernels::linear_tex::{
    ConvStepBindings, LinearTex, LinearTexBindings, LinearTexParams,
};
use mamba_wgpu::kernels::matmul::{Matmul, MatmulBuffers, MatmulParams};
use mamba_wgpu::kernels::selective_scan::{
    SelectiveScan, SelectiveScanBuffers, SelectiveScanParams,
};
use mamba_wgpu::kernels::selective_state_update::{ssm_texture, SelectiveStateUpdate};
use mamba_wgpu::kernels::ssd_chunk_cumsum::{
    SsdChunkCumsum, SsdChunkCumsumBuffers, SsdChunkCumsumParams,
};
use mamba_wgpu::kernels::ssd_chunk_scan::{SsdChunkScan, SsdChunkScanBuffers, SsdChunkScanParams};
use mamba_wgpu::kernels::ssd_chunk_state::{
    SsdChunkState, SsdChunkStateBuffers, SsdChunkStateParams,
};
use mamba_wgpu::kernels::ssd_scan_seq::{SsdScanSeq, SsdScanSeqBuffers, SsdScanSeqParams};
use mamba_wgpu::kernels::ssd_state_passing::{
    SsdStatePassing, SsdStatePassingBuffers, SsdStatePassingParams,
};
use mamba_wgpu::kernels::ssd_state_update::{SsdStateUpdate, SsdStateUpdateParams};
use mamba_wgpu::kernels::{run, Dispatch};
use mamba_wgpu::tensor::{PageStorage, PagedMatrix, WeightDtype, WeightStorage};
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
    g.bench_function(name, |b| b.iter_custom(|iters| gpu_time(ctx, d, iters)));
    g.finish();
}

/// `iters` dispatches of `d` in one pass: the pass's GPU time from its begin and end
/// timestamps, or the wall clock of the submit and its wait without timestamps. A dispatch
/// with a copy in front of it is timed by the wall clock, each copy in front of its dispatch.
fn gpu_time(ctx: &GpuContext, d: &Dispatch, iters: u64) -> Duration {
    if d.has_pre_copy() {
        let t = Instant::now();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        mamba_wgpu::kernels::encode_all(&mut enc, "bench", (0..iters).map(|_| d));
        ctx.queue().submit([enc.finish()]);
        ctx.wait().unwrap();
        return t.elapsed();
    }
    let q = ctx
        .features()
        .timestamp_query
        .then(|| ctx.timestamp_queries(2).unwrap());
    let t = Instant::now();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench"),
            timestamp_writes: q.as_ref().map(|q| q.pass_writes(0)),
        });
        for _ in 0..iters {
            d.encode(&mut pass);
        }
    }
    if let Some(q) = &q {
        q.resolve(&mut enc);
    }
    ctx.queue().submit([enc.finish()]);
    match &q {
        Some(q) => Duration::from_nanos(q.read_ns(ctx).unwrap()[1] as u64),
        None => {
            ctx.wait().unwrap();
            t.elapsed()
        }
    }
}

/// The state update the model runs on this device, and for its texture variant (CPU
/// adapters) the texture of `len` packed constants, all `value` (as the buffer beside it).
fn state_update(
    ctx: &GpuContext,
    len: usize,
    value: f32,
) -> (SelectiveStateUpdate, Option<wgpu::TextureView>) {
    if ctx.is_cpu_adapter() {
        let tex = ssm_texture(ctx, "bench", &vec![value; len]).unwrap();
        if tex.is_some() {
            return (SelectiveStateUpdate::new_ssm_texture(ctx).unwrap(), tex);
        }
    }
    (SelectiveStateUpdate::new(ctx).unwrap(), None)
}

/// The device's copy and read bandwidth at 64 MiB (capped at the binding limit).
fn device(c: &mut Criterion, ctx: &GpuContext) {
    let bytes = (64u64 << 20).min(ctx.storage_binding_limit()) / 16 * 16;
    let len = (bytes / 4) as usize;
    let (src, dst) = (buf(ctx, len, 1.0), buf(ctx, len, 0.0));
    let mut g = c.benchmark_group("device");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(2 * bytes));
    g.bench_function("copy_64MiB", |b| {
        b.iter_custom(|iters| {
            let q = ctx
                .features()
                .timestamp_inside_encoders
                .then(|| ctx.timestamp_queries(2).unwrap());
            let t = Instant::now();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            if let Some(q) = &q {
                let (set, i) = q.slot(0);
                enc.write_timestamp(set, i);
            }
            for _ in 0..iters {
                enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
            }
            if let Some(q) = &q {
                let (set, i) = q.slot(1);
                enc.write_timestamp(set, i);
                q.resolve(&mut enc);
            }
            ctx.queue().submit([enc.finish()]);
            match &q {
                Some(q) => Duration::from_nanos(q.read_ns(ctx).unwrap()[1] as u64),
                None => {
                    ctx.wait().unwrap();
                    t.elapsed()
                }
            }
        })
    });
    g.finish();
    // The read probes (the rates buffer- and texture-stored weights stream at): the profile
    // module checks each probe's sum, then times `iters` repetitions in one pass, keeping the
    // faster of its geometries.
    let probes = [
        (
            "stream_read_64MiB",
            mamba_wgpu::profile::read_bandwidth as fn(&GpuContext, u64, u32) -> _,
        ),
        (
            "stream_read_tex_64MiB",
            mamba_wgpu::profile::texture_read_bandwidth,
        ),
    ];
    let mut g = c.benchmark_group("device");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    for (name, probe) in probes {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let bw = probe(ctx, bytes, iters as u32).unwrap();
                Duration::from_secs_f64(bw.seconds * iters as f64)
            })
        });
    }
    g.finish();
    // The register FMA rate (FLOPs as elements): the ceiling for the matmuls' GFLOP/s.
    let (groups, rounds) = (512u32, 2000u32);
    let mut g = c.benchmark_group("device");
    g.sample_size(10);
    g.throughput(Throughput::Elements(
        u64::from(groups * 256 * rounds) * mamba_wgpu::kernels::fma_probe::FLOPS_PER_ROUND,
    ));
    g.bench_function("fma_probe", |b| {
        b.iter_custom(|iters| {
            let f = mamba_wgpu::profile::fma_rate(ctx, groups, rounds, iters as u32).unwrap();
            Duration::from_secs_f64(f.seconds * iters as f64)
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("a GPU adapter (or lavapipe)");
    eprintln!("adapter: {}", ctx.adapter_name());
    device(c, &ctx);
    ssd(c, &ctx);

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

    // The same scan walked sequentially (the prefill path on CPU adapters).
    let (update, tex) = state_update(&ctx, (E * N + 2 * E) as usize, 0.5);
    let d = update.bind(
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
        tex.as_ref(),
    );
    time(
        c,
        "selective_scan",
        "sequential_128x1536_n16",
        Throughput::Elements((l * E * N) as u64),
        &ctx,
        &d,
    );

    // One decoded token as the model runs it: dt_proj (rank 48) applied in the kernel to the
    // x_proj row [dt_in, B, C], its weight packed after the constants (see pack_ssm).
    let ssm_rank_len = ((E * (N + 2)).next_multiple_of(4) + E * R) as usize;
    let ssm_rank = buf(&ctx, ssm_rank_len, 0.01);
    let step = SelectiveScanParams {
        len: 1,
        dt_offset: 0,
        dt_stride: R + 2 * N,
        dt_rank: R,
        ..p
    };
    let (update, tex) = state_update(&ctx, ssm_rank_len, 0.01);
    let d = update.bind(
        &ctx,
        &step,
        SelectiveScanBuffers {
            dt: &dbc,
            bc: &dbc,
            x: &out,
            z: &xz,
            ssm: &ssm_rank,
            state: &state,
            y: &yb,
        },
        tex.as_ref(),
    );
    time(
        c,
        "selective_state_update",
        "decode_1536_n16_rank48",
        Throughput::Elements((E * N) as u64),
        &ctx,
        &d,
    );

    // Texture-stored in_proj weights (the path CPU adapters take): decode (m = 1, bytes of
    // weights streamed) and a 128-token prefill (FLOPs), f32 and f16.
    let (n, k) = (2 * E, D);
    let wv = vec![0.01f32; (n * k) as usize];
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        let pm = PagedMatrix::from_slice_stored(
            &ctx,
            "bench",
            &wv,
            n as usize,
            k as usize,
            dtype,
            WeightStorage::Texture,
        )
        .unwrap();
        let PageStorage::Texture {
            view,
            rows_per_line,
            ..
        } = &pm.pages[0].storage
        else {
            panic!("in_proj fits one texture page");
        };
        for m in [1u32, 128] {
            // One row: the one-row pipeline the model decodes with.
            // More rows: on CPU adapters the x-texture pipeline (x copied into a texture in
            // front of each dispatch, copy included in the time), as the model runs it.
            let kernel = if m == 1 {
                LinearTex::for_dtype_one_row(&ctx, dtype)
            } else if ctx.is_cpu_adapter() {
                LinearTex::for_dtype_x_texture(&ctx, dtype)
            } else {
                LinearTex::for_dtype(&ctx, dtype)
            }
            .unwrap();
            let x_texture = kernel
                .reads_x_texture()
                .then(|| LinearTex::x_texture(&ctx, k, m).unwrap());
            let (xm, ym, unused_rw) = (
                buf(&ctx, (m * k) as usize, 0.01),
                buf(&ctx, (m * n) as usize, 0.0),
                buf(&ctx, 4, 0.0),
            );
            let p = LinearTexParams {
                m,
                n,
                k,
                x_stride: k,
                y_stride: n,
                rows_per_line: *rows_per_line as u32,
                ..Default::default()
            };
            let d = kernel.bind(
                &ctx,
                &p,
                LinearTexBindings {
                    x: &xm,
                    w: view,
                    bias: &xm,
                    y: &ym,
                    conv: ConvStepBindings::unused(&xm, &unused_rw),
                    norm: &xm,
                    x_texture: x_texture.as_ref(),
                },
            );
            let tp = if m == 1 {
                Throughput::Bytes(pm.bytes())
            } else {
                Throughput::Elements(2 * u64::from(m * n * k))
            };
            time(
                c,
                "linear_tex",
                &format!("in_proj_{m}x3072x768_{}", dtype.name()),
                tp,
                &ctx,
                &d,
            );
        }
    }
}

/// Mamba-2's SSD at mamba2-130m's shapes (24 heads × 64 channels, d_state 128, one group,
/// chunks of 256): the four chunked prefill stages and the sequential walk over a 512-token
/// prompt, and the two decode forms. Throughput in state updates (H·P·N per token).
fn ssd(c: &mut Criterion, ctx: &GpuContext) {
    const H: u32 = 24;
    const P: u32 = 64;
    const NS: u32 = 128;
    const G: u32 = 1;
    const Q: u32 = 256;
    let e = H * P;
    let conv = e + 2 * G * NS;
    let width = e + conv + H; // in_proj row: z | xBC | dt
    for len in [1u32, 512] {
        let nchunks = len.div_ceil(Q);
        let xbc = buf(ctx, (len * conv) as usize, 0.01);
        let zx = buf(ctx, (len * width) as usize, -2.0);
        let mut heads = vec![0.5f32; H as usize]; // A_log
        heads.extend(vec![1.0f32; H as usize]); // D
        heads.extend(vec![-3.0f32; H as usize]); // dt_bias
        let heads = ctx.storage_buffer_init("bench", &heads).unwrap();
        let dt = buf(ctx, (len * H) as usize, 0.0);
        let dacs = buf(ctx, (len * H) as usize, 0.0);
        let chunks = buf(ctx, (nchunks * H * P * NS) as usize, 0.0);
        let state = buf(ctx, (H * P * NS) as usize, 0.0);
        let y = buf(ctx, (len * e) as usize, 0.0);
        let tp = Throughput::Elements(u64::from(len * H * P * NS));
        let seq = SsdScanSeqParams {
            batch: 1,
            len,
            nheads: H,
            head_dim: P,
            d_state: NS,
            ngroups: G,
            x_stride: conv,
            b_offset: e,
            c_offset: e + G * NS,
            dt_offset: e + conv,
            dt_stride: width,
            y_stride: e,
            dt_max: f32::INFINITY,
            ..Default::default()
        };
        let seq_bufs = SsdScanSeqBuffers {
            xbc: &xbc,
            dt_raw: &zx,
            heads: &heads,
            state: &state,
            y: &y,
        };
        // One token: the step the model decodes with.
        let kernel = if len == 1 {
            SsdScanSeq::step(ctx)
        } else {
            SsdScanSeq::new(ctx)
        };
        let d = kernel.unwrap().bind(ctx, &seq, seq_bufs);
        time(
            c,
            "ssd_scan_seq",
            &format!("{len}x24x64x128"),
            tp.clone(),
            ctx,
            &d,
        );
        if len == 1 {
            let p = SsdStateUpdateParams {
                batch: 1,
                nheads: H,
                head_dim: P,
                d_state: NS,
                ngroups: G,
                x_stride: conv,
                b_offset: e,
                c_offset: e + G * NS,
                dt_offset: e + conv,
                dt_stride: width,
                y_stride: e,
                dt_max: f32::INFINITY,
                ..Default::default()
            };
            let d = SsdStateUpdate::for_d_state(ctx, NS)
                .unwrap()
                .bind(ctx, &p, seq_bufs);
            time(c, "ssd_state_update", "24x64x128", tp, ctx, &d);
            continue;
        }
        let cs = SsdChunkCumsumParams {
            batch: 1,
            len,
            nheads: H,
            chunk: Q,
            dt_offset: e + conv,
            dt_stride: width,
            dt_min: 0.0,
            dt_max: f32::INFINITY,
        };
        let d = SsdChunkCumsum::new(ctx).unwrap().bind(
            ctx,
            &cs,
            SsdChunkCumsumBuffers {
                dt_raw: &zx,
                heads: &heads,
                dt: &dt,
                dacs: &dacs,
            },
        );
        time(
            c,
            "ssd_chunk_cumsum",
            &format!("{len}x24"),
            tp.clone(),
            ctx,
            &d,
        );
        let st = SsdChunkStateParams {
            batch: 1,
            len,
            nheads: H,
            head_dim: P,
            d_state: NS,
            ngroups: G,
            chunk: Q,
            x_stride: conv,
            b_offset: e,
            ..Default::default()
        };
        let d = SsdChunkState::new(ctx).unwrap().bind(
            ctx,
            &st,
            SsdChunkStateBuffers {
                xbc: &xbc,
                dt: &dt,
                dacs: &dacs,
                states: &chunks,
            },
        );
        time(
            c,
            "ssd_chunk_state",
            &format!("{len}x24x64x128"),
            tp.clone(),
            ctx,
            &d,
        );
        let sp = SsdStatePassingParams {
            batch: 1,
            len,
            nheads: H,
            head_dim: P,
            d_state: NS,
            chunk: Q,
            ..Default::default()
        };
        let d = SsdStatePassing::new(ctx).unwrap().bind(
            ctx,
            &sp,
            SsdStatePassingBuffers {
                dacs: &dacs,
                states: &chunks,
                state: &state,
            },
        );
        time(
            c,
            "ssd_state_passing",
            &format!("{len}x24x64x128"),
            tp.clone(),
            ctx,
            &d,
        );
        let sc = SsdChunkScanParams {
            batch: 1,
            len,
            nheads: H,
            head_dim: P,
            d_state: NS,
            ngroups: G,
            chunk: Q,
            x_offset: 0,
            x_stride: conv,
            b_offset: e,
            c_offset: e + G * NS,
            y_stride: e,
        };
        let d = SsdChunkScan::new(ctx).unwrap().bind(
            ctx,
            &sc,
            SsdChunkScanBuffers {
                xbc: &xbc,
                dt: &dt,
                dacs: &dacs,
                states: &chunks,
                heads: &heads,
                y: &y,
            },
        );
        time(
            c,
            "ssd_chunk_scan",
            &format!("{len}x24x64x128"),
            tp,
            ctx,
            &d,
        );
    }
}

criterion_group!(kernels, benches);
criterion_main!(kernels);
