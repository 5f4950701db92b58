//! Where GPU time goes: per-dispatch timings of a forward, their sums per kernel and per
//! layer, a Chrome trace of them, and the device's own copy and read bandwidth measured by
//! the same harness (the limits the kernels are judged against).
//!
//! A profiled forward records the same dispatches as a normal one, in the same order, over
//! the same buffers, so it computes the same numbers; only the timing around them differs:
//!
//! - [`ProfileMode::TimestampsInsidePass`]: one compute pass, a GPU timestamp written before
//!   and after every dispatch (`TIMESTAMP_QUERY_INSIDE_PASSES`). Closest to a normal forward.
//! - [`ProfileMode::TimestampsPerPass`]: one compute pass per dispatch with the pass's own
//!   begin and end timestamps (`TIMESTAMP_QUERY` alone, the WebGPU way). Pass boundaries add
//!   a little cost per dispatch.
//! - [`ProfileMode::WallClock`]: no timestamps on the device, so each dispatch is submitted on
//!   its own and waited for; its duration is CPU wall clock and includes the submit and the
//!   wait (tens of microseconds), so small kernels look slower than they are.
//!
//! Timestamps are read as written; on a GPU that overlaps independent dispatches, a
//! dispatch's interval can include some of its neighbours' work.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernels::fma_probe::{FmaProbe, FmaProbeParams};
use crate::kernels::stream_read::{StreamRead, StreamReadBuffers, StreamReadParams};
use crate::kernels::stream_read_tex::{StreamReadTex, StreamReadTexParams};
use crate::kernels::Dispatch;

/// How a profiled forward times its dispatches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProfileMode {
    /// The best the device offers: timestamps inside one pass, else one pass per dispatch,
    /// else wall clock.
    #[default]
    Auto,
    /// GPU timestamps around each dispatch inside one compute pass.
    TimestampsInsidePass,
    /// One compute pass per dispatch, timed by the pass's begin and end timestamps.
    TimestampsPerPass,
    /// CPU wall clock around a submit and a device wait per dispatch (no GPU timestamps).
    WallClock,
}

impl ProfileMode {
    /// The concrete mode `self` means on `ctx`'s device; fails with
    /// [`Error::MissingFeature`] when a timestamp mode was asked for that the device lacks.
    pub fn resolve(self, ctx: &GpuContext) -> Result<Self> {
        let f = ctx.features();
        match self {
            ProfileMode::Auto if f.timestamp_inside_passes => Ok(Self::TimestampsInsidePass),
            ProfileMode::Auto if f.timestamp_query => Ok(Self::TimestampsPerPass),
            ProfileMode::Auto => Ok(Self::WallClock),
            ProfileMode::TimestampsInsidePass if !f.timestamp_inside_passes => {
                Err(Error::MissingFeature("TIMESTAMP_QUERY_INSIDE_PASSES"))
            }
            ProfileMode::TimestampsPerPass if !f.timestamp_query => {
                Err(Error::MissingFeature("TIMESTAMP_QUERY"))
            }
            m => Ok(m),
        }
    }

    /// Whether durations come from the GPU's clock (not CPU wall clock).
    pub fn is_gpu_time(self) -> bool {
        matches!(
            self,
            ProfileMode::TimestampsInsidePass | ProfileMode::TimestampsPerPass
        )
    }

    /// A short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            ProfileMode::Auto => "auto",
            ProfileMode::TimestampsInsidePass => "GPU timestamps inside one pass",
            ProfileMode::TimestampsPerPass => "GPU timestamps, one pass per dispatch",
            ProfileMode::WallClock => {
                "WALL CLOCK per dispatch (no GPU timestamps: includes submit and wait)"
            }
        }
    }
}

/// Which part of the model a dispatch belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// The token embedding.
    Embedding,
    /// Block `i`: its norm and mixer.
    Layer(usize),
    /// The final norm and lm_head.
    Head,
    /// Choosing the next token.
    Sample,
    /// A forward whose layers could not be told apart.
    Forward,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Section::Embedding => write!(f, "embedding"),
            Section::Layer(i) => write!(f, "layer {i}"),
            Section::Head => write!(f, "head"),
            Section::Sample => write!(f, "sample"),
            Section::Forward => write!(f, "forward"),
        }
    }
}

/// The time one dispatch took.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTiming {
    /// Position in the forward's record order.
    pub index: usize,
    /// The kernel, without the `mamba_wgpu.` prefix (`matmul`, `selective_scan`, ...).
    pub kernel: String,
    /// The part of the model it belongs to.
    pub section: Section,
    /// For `matmul` and `gemv`: `(m, n, k)`, rows of x, output features of this page, inputs.
    pub shape: Option<[u32; 3]>,
    /// Workgroups dispatched.
    pub workgroups: [u32; 3],
    /// Start, in nanoseconds after the profile's first timestamp.
    pub start_ns: f64,
    /// Duration in nanoseconds (never negative).
    pub duration_ns: f64,
}

impl DispatchTiming {
    /// `kernel`, with `n×k` for a matrix product: which projection it is, whatever the page
    /// or the token count (in a Mamba-1 block of mamba-130m `matmul 3072x768` is in_proj).
    pub fn op(&self) -> String {
        match self.shape {
            Some([_, n, k]) => format!("{} {n}x{k}", self.kernel),
            None => self.kernel.clone(),
        }
    }

    /// `section kernel`, e.g. `layer 3 matmul 3072x768`.
    pub fn label(&self) -> String {
        format!("{} {}", self.section, self.op())
    }
}

/// A sum of dispatch times under one name.
#[derive(Clone, Debug, PartialEq)]
pub struct Total {
    /// The kernel, op or section.
    pub name: String,
    /// Dispatches summed.
    pub count: usize,
    /// Nanoseconds.
    pub ns: f64,
}

/// The timed dispatches of one profiled forward (or of the chunks of one prefill).
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// `prefill`, `decode` or `logits`.
    pub phase: String,
    /// Tokens fed, over the whole batch.
    pub tokens: usize,
    /// How the durations were measured (never `Auto`).
    pub mode: ProfileMode,
    /// One entry per dispatch, in record order.
    pub timings: Vec<DispatchTiming>,
    /// CPU wall clock of the whole profiled forward, profiling overhead included.
    pub wall_ns: f64,
}

fn sums(it: impl Iterator<Item = (String, f64)>) -> Vec<Total> {
    let mut order: Vec<Total> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (name, ns) in it {
        let i = *at.entry(name.clone()).or_insert_with(|| {
            order.push(Total {
                name,
                count: 0,
                ns: 0.0,
            });
            order.len() - 1
        });
        order[i].count += 1;
        order[i].ns += ns;
    }
    order
}

fn by_time(mut v: Vec<Total>) -> Vec<Total> {
    v.sort_by(|a, b| b.ns.total_cmp(&a.ns));
    v
}

impl Profile {
    /// The sum of the dispatch durations.
    pub fn total_ns(&self) -> f64 {
        self.timings.iter().map(|t| t.duration_ns).sum()
    }

    /// First start to last end.
    pub fn span_ns(&self) -> f64 {
        self.timings
            .iter()
            .map(|t| t.start_ns + t.duration_ns)
            .fold(0.0, f64::max)
    }

    /// Time per kernel summed over layers, longest first.
    pub fn by_kernel(&self) -> Vec<Total> {
        by_time(sums(
            self.timings
                .iter()
                .map(|t| (t.kernel.clone(), t.duration_ns)),
        ))
    }

    /// Time per op (a kernel, matrix products told apart by `n×k`) summed over layers,
    /// longest first.
    pub fn by_op(&self) -> Vec<Total> {
        by_time(sums(self.timings.iter().map(|t| (t.op(), t.duration_ns))))
    }

    /// Time per section (embedding, each layer, head, sample) in model order.
    pub fn by_section(&self) -> Vec<Total> {
        let mut v: Vec<(Section, f64)> = self
            .timings
            .iter()
            .map(|t| (t.section, t.duration_ns))
            .collect();
        v.sort_by_key(|(s, _)| *s);
        sums(v.into_iter().map(|(s, ns)| (s.to_string(), ns)))
    }

    /// Appends the dispatches of a later submit (the next prefill chunk), after this one's.
    pub fn append(&mut self, other: Profile) {
        let offset = self.span_ns();
        let first = self.timings.len();
        self.tokens += other.tokens;
        self.wall_ns += other.wall_ns;
        self.timings
            .extend(other.timings.into_iter().enumerate().map(|(i, mut t)| {
                t.index = first + i;
                t.start_ns += offset;
                t
            }));
    }

    /// A plain-text report: totals, then time per op and per section.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let total = self.total_ns().max(f64::MIN_POSITIVE);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} ({} tokens): {} dispatches, {:.3} ms summed, {:.3} ms wall [{}]",
            self.phase,
            self.tokens,
            self.timings.len(),
            total / 1e6,
            self.wall_ns / 1e6,
            self.mode.describe()
        );
        let _ = writeln!(s, "  per kernel (summed over layers):");
        for t in self.by_op() {
            let _ = writeln!(
                s,
                "    {:<32} {:>5} x {:>10.1} us = {:>9.3} ms {:>5.1}%",
                t.name,
                t.count,
                t.ns / t.count as f64 / 1e3,
                t.ns / 1e6,
                100.0 * t.ns / total
            );
        }
        let _ = writeln!(s, "  per layer:");
        let sections = self.by_section();
        let layers: Vec<&Total> = sections
            .iter()
            .filter(|t| t.name.starts_with("layer"))
            .collect();
        for t in &sections {
            if !t.name.starts_with("layer") {
                let _ = writeln!(s, "    {:<12} {:>9.3} ms", t.name, t.ns / 1e6);
            }
        }
        if !layers.is_empty() {
            let ns: Vec<f64> = layers.iter().map(|t| t.ns).collect();
            let (min, max) = ns
                .iter()
                .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            let mean = ns.iter().sum::<f64>() / ns.len() as f64;
            let _ = writeln!(
                s,
                "    {} layers: mean {:.3} ms, min {:.3}, max {:.3}",
                ns.len(),
                mean / 1e6,
                min / 1e6,
                max / 1e6
            );
            let line: Vec<String> = ns.iter().map(|x| format!("{:.2}", x / 1e6)).collect();
            let _ = writeln!(s, "    ms per layer: {}", line.join(" "));
        }
        s
    }

    /// Chrome trace events (`ph: "X"`, microseconds) for this profile on thread `tid`, shifted
    /// by `offset_us`, and the thread's name.
    pub fn trace_events(&self, tid: u32, offset_us: f64) -> Vec<serde_json::Value> {
        let mut v = vec![serde_json::json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
            "args": { "name": format!("{} ({})", self.phase, self.mode.describe()) },
        })];
        for t in &self.timings {
            let mut args = serde_json::json!({
                "section": t.section.to_string(),
                "index": t.index,
                "workgroups": t.workgroups,
            });
            if let Section::Layer(i) = t.section {
                args["layer"] = i.into();
            }
            if let Some([m, n, k]) = t.shape {
                args["m"] = m.into();
                args["n"] = n.into();
                args["k"] = k.into();
            }
            v.push(serde_json::json!({
                "name": t.kernel, "cat": self.phase, "ph": "X", "pid": 1, "tid": tid,
                "ts": offset_us + t.start_ns / 1e3, "dur": t.duration_ns / 1e3, "args": args,
            }));
        }
        v
    }
}

/// A Chrome trace (chrome://tracing, Perfetto) of `profiles`, each on its own thread and laid
/// out one after the other.
pub fn chrome_trace(profiles: &[&Profile]) -> serde_json::Value {
    let mut events = Vec::new();
    let mut offset = 0.0;
    for (i, p) in profiles.iter().enumerate() {
        events.extend(p.trace_events(i as u32 + 1, offset));
        offset += p.span_ns() / 1e3 + 10.0;
    }
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ns" })
}

/// Writes [`chrome_trace`] of `profiles` to `path`.
pub fn write_chrome_trace(path: &Path, profiles: &[&Profile]) -> Result<()> {
    let text = serde_json::to_string(&chrome_trace(profiles))
        .map_err(|e| Error::InvalidInput(format!("trace: {e}")))?;
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Which section each of `n_steps` steps of a forward belongs to, from the plan's marks
/// (`Plan::mark`): the step index where each of the `n_layer` blocks starts, then where the
/// head starts (its final norm). Steps before the first mark are the embedding; the last
/// `n_sample` steps are the sampler. Marks of another count give `Forward` for the rest.
pub(crate) fn sections(
    n_steps: usize,
    marks: &[usize],
    n_layer: usize,
    n_sample: usize,
) -> Vec<Section> {
    let n_main = n_steps - n_sample;
    (0..n_steps)
        .map(|i| {
            if i >= n_main {
                return Section::Sample;
            }
            if marks.len() != n_layer + 1 {
                return Section::Forward;
            }
            match marks.iter().rposition(|&m| m <= i) {
                None => Section::Embedding,
                Some(j) if j < n_layer => Section::Layer(j),
                Some(_) => Section::Head,
            }
        })
        .collect()
}

/// Records and runs `steps` (dispatches with their params as words, the first `n_main` the
/// forward and the rest the sampler) timed per `mode` (resolved, not `Auto`), then `finish`'s
/// commands (a token readback copy) in the last submit. Returns the timings; the caller maps
/// its own readbacks afterwards.
pub(crate) fn run_profiled(
    ctx: &GpuContext,
    steps: &[(&Dispatch, Vec<u32>)],
    sections: &[Section],
    mode: ProfileMode,
    finish: impl FnOnce(&mut wgpu::CommandEncoder),
) -> Result<(Vec<DispatchTiming>, f64)> {
    let wall = Instant::now();
    let new_encoder = || {
        ctx.device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("mamba_wgpu.profile"),
            })
    };
    let n = steps.len();
    let mut spans: Vec<(f64, f64)> = Vec::with_capacity(n);
    match mode {
        ProfileMode::WallClock | ProfileMode::Auto => {
            for (d, _) in steps {
                let t0 = wall.elapsed().as_secs_f64() * 1e9;
                let mut enc = new_encoder();
                d.encode_pre_copy(&mut enc);
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(d.label()),
                        timestamp_writes: None,
                    });
                    d.encode(&mut pass);
                }
                ctx.queue().submit([enc.finish()]);
                ctx.wait()?;
                spans.push((t0, wall.elapsed().as_secs_f64() * 1e9 - t0));
            }
            let mut enc = new_encoder();
            finish(&mut enc);
            ctx.queue().submit([enc.finish()]);
        }
        ProfileMode::TimestampsInsidePass | ProfileMode::TimestampsPerPass => {
            let q = ctx.timestamp_queries(2 * n as u32)?;
            let mut enc = new_encoder();
            if mode == ProfileMode::TimestampsInsidePass {
                // One pass, cut in front of a dispatch that needs a copy first (the copy runs
                // between the passes, outside every dispatch's span).
                let mut i = 0;
                while i < n {
                    steps[i].0.encode_pre_copy(&mut enc);
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("mamba_wgpu.profile"),
                        timestamp_writes: None,
                    });
                    loop {
                        let (set, j) = q.slot(2 * i as u32);
                        pass.write_timestamp(set, j);
                        steps[i].0.encode(&mut pass);
                        pass.write_timestamp(set, j + 1);
                        i += 1;
                        if i == n || steps[i].0.has_pre_copy() {
                            break;
                        }
                    }
                }
            } else {
                for (i, (d, _)) in steps.iter().enumerate() {
                    d.encode_pre_copy(&mut enc);
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(d.label()),
                        timestamp_writes: Some(q.pass_writes(2 * i as u32)),
                    });
                    d.encode(&mut pass);
                }
            }
            finish(&mut enc);
            q.resolve(&mut enc);
            ctx.queue().submit([enc.finish()]);
            let ns = q.read_ns(ctx)?;
            // A begin written after its end (a reordering driver) counts as zero, not negative.
            spans.extend(ns.chunks_exact(2).map(|p| (p[0], (p[1] - p[0]).max(0.0))));
        }
    }
    ctx.check()?;
    let wall_ns = wall.elapsed().as_secs_f64() * 1e9;
    let timings = steps
        .iter()
        .zip(sections)
        .zip(spans)
        .enumerate()
        .map(
            |(index, (((d, words), section), (start_ns, duration_ns)))| {
                let kernel = d.label().strip_prefix("mamba_wgpu.").unwrap_or(d.label());
                let product = kernel.starts_with("matmul") || kernel.starts_with("gemv");
                DispatchTiming {
                    index,
                    kernel: kernel.to_string(),
                    section: *section,
                    shape: (product && words.len() >= 3).then(|| [words[0], words[1], words[2]]),
                    workgroups: d.workgroups(),
                    start_ns,
                    duration_ns,
                }
            },
        )
        .collect();
    Ok((timings, wall_ns))
}

/// A measured bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bandwidth {
    /// Bytes of memory traffic per repetition (a copy counts its read and its write).
    pub bytes: u64,
    /// Repetitions timed (after one untimed warm-up).
    pub reps: u32,
    /// Seconds per repetition.
    pub seconds: f64,
    /// `bytes / seconds / 1e9`.
    pub gb_s: f64,
    /// Whether the time came from GPU timestamps (else wall clock around one submit of all
    /// repetitions and a wait, which adds the submit's latency).
    pub gpu_timed: bool,
}

impl Bandwidth {
    fn new(bytes: u64, reps: u32, total_ns: f64, gpu_timed: bool) -> Self {
        let seconds = total_ns.max(1.0) / 1e9 / f64::from(reps);
        Self {
            bytes,
            reps,
            seconds,
            gb_s: bytes as f64 / seconds / 1e9,
            gpu_timed,
        }
    }
}

/// A test pattern with an exactly known sum: small integers, so every f32 partial sum of the
/// probe is exact (below 2^24).
fn pattern(len: usize) -> Vec<f32> {
    (0..len).map(|i| (i % 4) as f32).collect()
}

/// The device's copy bandwidth: `copy_buffer_to_buffer` of `bytes` (rounded down to 256,
/// capped at the binding limit) `reps` times in one submit. Reported traffic counts each copy
/// twice, read and write, so it compares with a kernel's bytes read plus written.
pub fn copy_bandwidth(ctx: &GpuContext, bytes: u64, reps: u32) -> Result<Bandwidth> {
    let bytes = (bytes.min(ctx.storage_binding_limit()) / 256 * 256).max(256);
    let len = (bytes / 4) as usize;
    let src = ctx.storage_buffer("mamba_wgpu.probe.src", len)?;
    ctx.queue()
        .write_buffer(&src, 0, bytemuck::cast_slice(&pattern(len)));
    let dst = ctx.storage_buffer("mamba_wgpu.probe.dst", len)?;
    let copy = |enc: &mut wgpu::CommandEncoder| enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    copy(&mut enc);
    ctx.queue().submit([enc.finish()]);
    ctx.wait()?;
    let reps = reps.max(1);
    let gpu = ctx.features().timestamp_inside_encoders;
    let q = if gpu {
        Some(ctx.timestamp_queries(2)?)
    } else {
        None
    };
    let t = Instant::now();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    if let Some(q) = &q {
        let (set, j) = q.slot(0);
        enc.write_timestamp(set, j);
    }
    for _ in 0..reps {
        copy(&mut enc);
    }
    if let Some(q) = &q {
        let (set, j) = q.slot(1);
        enc.write_timestamp(set, j);
        q.resolve(&mut enc);
    }
    ctx.queue().submit([enc.finish()]);
    let ns = match &q {
        Some(q) => q.read_ns(ctx)?[1],
        None => {
            ctx.wait()?;
            t.elapsed().as_secs_f64() * 1e9
        }
    };
    ctx.check()?;
    let check: Vec<f32> = ctx.read_buffer(&dst, len - 4, 4)?;
    if check != pattern(len)[len - 4..] {
        return Err(Error::Gpu("copy probe: the copy did not arrive".into()));
    }
    Ok(Bandwidth::new(2 * bytes, reps, ns, gpu))
}

/// Loads per invocation the read probes try; each keeps the fastest. On GPUs few loads per
/// invocation keep more of them in flight; on CPU adapters (one thread per workgroup) more
/// loads per invocation amortise the launch, and which wins differs between storage buffers
/// and textures (lavapipe: 16 for buffers, 64 for textures).
const PROBE_LOADS: [u32; 2] = [16, 64];

/// The best of `PROBE_LOADS` geometries: builds each probe with `make` (its dispatch and the
/// element count its partials cover), checks the sum once, times it `reps` times.
fn best_probe(
    ctx: &GpuContext,
    bytes: u64,
    reps: u32,
    label: &str,
    mut make: impl FnMut(u32) -> Result<(Dispatch, wgpu::Buffer, usize)>,
    want: f64,
) -> Result<Bandwidth> {
    let mut best: Option<Bandwidth> = None;
    for loads in PROBE_LOADS {
        let (d, partial, n) = make(loads)?;
        crate::kernels::run(ctx, &[&d])?;
        let got: f64 = ctx
            .read_buffer::<f32>(&partial, 0, n)?
            .iter()
            .map(|&x| f64::from(x))
            .sum();
        if got != want {
            return Err(Error::Gpu(format!(
                "{label} ({loads} loads per invocation) summed {got}, want {want}"
            )));
        }
        let bw = time_reps(ctx, &d, bytes, reps, label)?;
        if best.as_ref().is_none_or(|b| bw.gb_s > b.gb_s) {
            best = Some(bw);
        }
    }
    best.ok_or_else(|| Error::Gpu(format!("{label}: no probe ran")))
}

/// The device's read bandwidth: the `stream_read` kernel sums `bytes` (rounded down to 16,
/// capped at the binding limit) `reps` times in one pass, in each of a few geometries, and the
/// fastest is kept. Each sum is checked before timing.
pub fn read_bandwidth(ctx: &GpuContext, bytes: u64, reps: u32) -> Result<Bandwidth> {
    let bytes = (bytes.min(ctx.storage_binding_limit()) / 16 * 16).max(16);
    let len = (bytes / 4) as usize;
    let data = ctx.storage_buffer_init("mamba_wgpu.probe.data", &pattern(len))?;
    let kernel = StreamRead::new(ctx)?;
    let want: f64 = (0..len).map(|i| (i % 4) as f64).sum();
    best_probe(
        ctx,
        bytes,
        reps,
        "mamba_wgpu.probe.read",
        |loads| {
            let params = StreamReadParams::with_loads((len / 4) as u32, loads);
            let n = params.groups as usize * 256;
            let partial = ctx.storage_buffer("mamba_wgpu.probe.partial", n)?;
            let d = kernel.bind(
                ctx,
                &params,
                StreamReadBuffers {
                    data: &data,
                    partial: &partial,
                },
            );
            Ok((d, partial, n))
        },
        want,
    )
}

/// Times `reps` repetitions of the probe dispatch `d` (which reads `bytes`) in one pass: GPU
/// timestamps where the device has them, wall clock with a wait otherwise.
fn time_reps(
    ctx: &GpuContext,
    d: &Dispatch,
    bytes: u64,
    reps: u32,
    label: &str,
) -> Result<Bandwidth> {
    let reps = reps.max(1);
    let gpu = ctx.features().timestamp_query;
    let q = if gpu {
        Some(ctx.timestamp_queries(2)?)
    } else {
        None
    };
    let t = Instant::now();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: q.as_ref().map(|q| q.pass_writes(0)),
        });
        for _ in 0..reps {
            d.encode(&mut pass);
        }
    }
    if let Some(q) = &q {
        q.resolve(&mut enc);
    }
    ctx.queue().submit([enc.finish()]);
    let ns = match &q {
        Some(q) => q.read_ns(ctx)?[1],
        None => {
            ctx.wait()?;
            t.elapsed().as_secs_f64() * 1e9
        }
    };
    ctx.check()?;
    Ok(Bandwidth::new(bytes, reps, ns, gpu))
}

/// The device's register FMA rate in GFLOP/s (as [`Bandwidth::gb_s`], with `bytes` holding the
/// FLOPs of one repetition): [`crate::kernels::fma_probe`] over `groups` workgroups of 256
/// invocations, `iters` rounds each. The ceiling a matmul's GFLOP/s is read against. The
/// result is checked for finiteness (the probe's values stay near 1).
pub fn fma_rate(ctx: &GpuContext, groups: u32, iters: u32, reps: u32) -> Result<Bandwidth> {
    let params = FmaProbeParams {
        iters,
        seed: 1.0,
        groups: groups.max(1),
        _pad0: 0,
    };
    let n = (params.groups * crate::kernels::fma_probe::WORKGROUP_SIZE) as usize;
    let out = ctx.storage_buffer("mamba_wgpu.probe.fma", n)?;
    let d = FmaProbe::new(ctx)?.bind(ctx, &params, &out);
    crate::kernels::run(ctx, &[&d])?;
    let v = ctx.read_buffer::<f32>(&out, 0, n)?;
    if let Some(bad) = v.iter().find(|x| !x.is_finite() || **x < 1.0) {
        return Err(Error::Gpu(format!("fma probe produced {bad}")));
    }
    let flops = n as u64 * u64::from(iters) * crate::kernels::fma_probe::FLOPS_PER_ROUND;
    time_reps(ctx, &d, flops, reps, "mamba_wgpu.probe.fma")
}

/// The device's read bandwidth from a 2-D rgba32float texture (`stream_read_tex` over about
/// `bytes`, lines of up to 4,096 texels): the rate texture-stored weights
/// ([`crate::tensor::WeightStorage::Texture`]) can stream at, beside [`read_bandwidth`]'s
/// storage-buffer rate. Checks the sum first, like [`read_bandwidth`].
pub fn texture_read_bandwidth(ctx: &GpuContext, bytes: u64, reps: u32) -> Result<Bandwidth> {
    let limit = ctx.texture_dimension_limit();
    let width = limit.min(4096);
    let texels = (bytes / 16).clamp(1, u64::from(width) * u64::from(limit));
    let height = texels.div_ceil(u64::from(width)) as u32;
    let len = (width * height) as usize * 4;
    let data = pattern(len);
    let size = wgpu::Extent3d {
        width,
        height,
        depth_or_array_layers: 1,
    };
    let texture = ctx.storage_texture(
        "mamba_wgpu.probe.texture",
        wgpu::TextureFormat::Rgba32Float,
        width,
        height,
    );
    ctx.queue().write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        bytemuck::cast_slice(&data),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(width * 16),
            rows_per_image: Some(height),
        },
        size,
    );
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    let kernel = StreamReadTex::new(ctx)?;
    let want: f64 = (0..len).map(|i| (i % 4) as f64).sum();
    best_probe(
        ctx,
        len as u64 * 4,
        reps,
        "mamba_wgpu.probe.read_tex",
        |loads| {
            let params = StreamReadTexParams::with_loads(width * height, width, loads);
            let n = params.groups as usize * 256;
            let partial = ctx.storage_buffer("mamba_wgpu.probe.partial", n)?;
            let d = kernel.bind(ctx, &params, &view, &partial);
            Ok((d, partial, n))
        },
        want,
    )
}
