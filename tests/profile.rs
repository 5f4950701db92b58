//! Profiling: a profiled forward times every dispatch with sensible labels and computes the same
//! logits and tokens as a normal one, in every timing mode the device has; the Chrome trace is
//! well formed; the read-bandwidth probe's sum is right on awkward sizes and the probes run.

mod common;

use common::fixtures::fixture_dir;
use common::{ctx, rand_vec, read, shared, upload, zeros};
use mamba_wgpu::kernels::run;
use mamba_wgpu::kernels::stream_read::{StreamRead, StreamReadBuffers, StreamReadParams};
use mamba_wgpu::profile::{self, Profile, ProfileMode, Section};
use mamba_wgpu::{Error, LoadOptions, Model, SessionOptions, WeightStorage};

const PROMPT: &[u32] = &[3, 17, 99, 5, 64, 2, 127];

/// A fixture with its matrices in storage buffers, so the kernel names below (matmul, gemv)
/// hold on every adapter; texture storage is profiled the same way under other names.
fn tiny(family: &str, name: &str) -> Model {
    tiny_in(family, name, WeightStorage::Buffer)
}

fn tiny_in(family: &str, name: &str, storage: WeightStorage) -> Model {
    let options = LoadOptions {
        storage,
        ..Default::default()
    };
    Model::load_with(shared().clone(), &fixture_dir(family, name), &options).unwrap()
}

/// The Mamba-1 prefill scan: the sequential walk on CPU adapters, the parallel scan elsewhere.
fn prefill_scan() -> &'static str {
    if ctx().is_cpu_adapter() {
        state_update()
    } else {
        "selective_scan"
    }
}

/// The block norm's label: its narrow variant on CPU adapters.
fn norm() -> &'static str {
    if ctx().is_cpu_adapter() {
        "rmsnorm_narrow"
    } else {
        "rmsnorm"
    }
}

/// The state update's label: its subgroup variant where the device has subgroups, reading
/// its constants from a texture on CPU adapters.
fn state_update() -> &'static str {
    match (ctx().features().subgroup, ctx().is_cpu_adapter()) {
        (true, true) => "selective_state_update_subgroup_ssm_texture",
        (true, false) => "selective_state_update_subgroup",
        (false, true) => "selective_state_update_ssm_texture",
        (false, false) => "selective_state_update",
    }
}

/// The modes to try: every concrete one the device has, and `Auto`.
fn modes() -> Vec<ProfileMode> {
    let f = ctx().features();
    eprintln!(
        "adapter {}: timestamps {}, inside encoders {}, inside passes {}, period {} ns",
        ctx().adapter_name(),
        f.timestamp_query,
        f.timestamp_inside_encoders,
        f.timestamp_inside_passes,
        ctx().timestamp_period_ns()
    );
    let mut m = vec![ProfileMode::Auto, ProfileMode::WallClock];
    if f.timestamp_query {
        m.push(ProfileMode::TimestampsPerPass);
    }
    if f.timestamp_inside_passes {
        m.push(ProfileMode::TimestampsInsidePass);
    }
    m
}

fn check_timings(p: &Profile) {
    assert_ne!(p.mode, ProfileMode::Auto);
    for (i, t) in p.timings.iter().enumerate() {
        assert_eq!(t.index, i);
        assert!(
            t.duration_ns.is_finite() && t.duration_ns >= 0.0,
            "{}: duration {}",
            t.label(),
            t.duration_ns
        );
        assert!(t.start_ns.is_finite() && t.start_ns >= 0.0);
    }
    assert!(p.wall_ns > 0.0);
}

/// Kernels of a section in order.
fn kernels(p: &Profile, s: Section) -> Vec<&str> {
    p.timings
        .iter()
        .filter(|t| t.section == s)
        .map(|t| t.kernel.as_str())
        .collect()
}

/// Profiles the prompt's logits on `m` in every mode: the same dispatches over the same
/// buffers, so bit for bit the logits of an unprofiled forward; then `check(mode, profile)`.
fn each_profiled_prompt(m: &Model, check: impl Fn(ProfileMode, &Profile)) {
    let opts = SessionOptions {
        all_logits: true,
        ..Default::default()
    };
    let want = m.session(&opts).unwrap().logits(&[PROMPT]).unwrap();
    for mode in modes() {
        let mut s = m.session(&opts).unwrap();
        let (got, p) = s.logits_profiled(&[PROMPT], mode).unwrap();
        assert_eq!(
            got, want,
            "{mode:?}: logits differ from the unprofiled forward"
        );
        check_timings(&p);
        check(mode, &p);
    }
}

#[test]
fn profiled_prefill_times_every_dispatch_and_keeps_the_logits() {
    each_profiled_prompt(&tiny("mamba1", "tiny_tied"), |mode, p| {
        assert_eq!(p.tokens, PROMPT.len());
        // Embedding, 3 Mamba-1 blocks, final norm and the (tied, one page) lm_head.
        assert_eq!(kernels(p, Section::Embedding), ["embedding"]);
        let block = [
            norm(),
            "matmul",
            "conv1d",
            "matmul",
            "matmul",
            prefill_scan(),
            "matmul",
        ];
        for i in 0..3 {
            assert_eq!(kernels(p, Section::Layer(i)), block, "{mode:?} layer {i}");
        }
        assert_eq!(kernels(p, Section::Head), [norm(), "matmul"]);
        assert_eq!(p.timings.len(), 1 + 3 * block.len() + 2);
        // in_proj of layer 1: 7 tokens, 2·64 outputs, 32 inputs.
        let in_proj = &p.timings[1 + block.len() + 1];
        assert_eq!(in_proj.shape, Some([7, 128, 32]));
        assert_eq!(in_proj.label(), "layer 1 matmul 128x32");
        assert_eq!(p.by_section().len(), 5);
        let summed: f64 = p.by_kernel().iter().map(|t| t.ns).sum();
        assert!((summed - p.total_ns()).abs() <= 1e-6 * p.total_ns().max(1.0));
        eprintln!("{}", p.report());
    });
}

/// Texture-stored matrices: on CPU adapters the prompt's products whose x rows are 256 bytes
/// apart (x_proj and out_proj, 64 inputs) read x from a texture filled by a copy in front of
/// the dispatch, so the profiler cuts its pass there; every mode still gives the unprofiled
/// logits bit for bit.
#[test]
fn profiled_prefill_with_x_texture_copies_keeps_the_logits() {
    let m = tiny_in("mamba1", "tiny_tied", WeightStorage::Texture);
    each_profiled_prompt(&m, |mode, p| {
        let x_texture = p
            .timings
            .iter()
            .filter(|t| t.kernel.ends_with("_x_texture"))
            .count();
        // Two such products in each of the 3 blocks on CPU adapters; none elsewhere.
        let want_x = if ctx().is_cpu_adapter() { 6 } else { 0 };
        assert_eq!(x_texture, want_x, "{mode:?}: {}", p.report());
    });
}

#[test]
fn profiled_decode_chooses_the_same_tokens() {
    let m = tiny("mamba1", "tiny_tied");
    let mut plain = m.session(&SessionOptions::default()).unwrap();
    let mut want = plain.prefill(&[PROMPT]).unwrap();
    want.extend(plain.decode().unwrap());
    for mode in modes() {
        let mut s = m.session(&SessionOptions::default()).unwrap();
        let (mut got, pp) = s.prefill_profiled(&[PROMPT], mode).unwrap();
        let (next, tg) = s.decode_profiled(mode).unwrap();
        got.extend(next);
        assert_eq!(got, want, "{mode:?}");
        check_timings(&pp);
        check_timings(&tg);
        assert_eq!(kernels(&pp, Section::Sample), ["sample"]);
        assert_eq!(tg.timings.len(), s.dispatches_per_token());
        assert_eq!(
            kernels(&tg, Section::Layer(2)),
            [
                norm(),
                "gemv",
                "conv1d_step",
                "gemv",
                // dt_proj is applied inside the state update when decoding.
                state_update(),
                "gemv"
            ]
        );
        assert_eq!(tg.timings.last().unwrap().section, Section::Sample);
        assert_eq!(tg.tokens, 1);
    }
}

#[test]
fn chunked_prefill_profiles_append_and_mamba2_layers_are_found() {
    let m = tiny("mamba2", "g1_small");
    let opts = SessionOptions {
        max_chunk_tokens: 3,
        ..Default::default()
    };
    let prompt = &[1, 2, 3, 4, 5, 6, 7][..];
    let want = m.session(&opts).unwrap().prefill(&[prompt]).unwrap();
    let mut s = m.session(&opts).unwrap();
    let (got, p) = s.prefill_profiled(&[prompt], ProfileMode::Auto).unwrap();
    assert_eq!(got, want);
    check_timings(&p);
    assert_eq!(p.tokens, 7);
    // Three chunks (3 + 3 + 1 tokens); the sampler only after the last.
    let embeds = p.timings.iter().filter(|t| t.kernel == "embedding").count();
    assert_eq!(embeds, 3);
    assert_eq!(kernels(&p, Section::Sample), ["sample"]);
    assert!(p.timings.iter().all(|t| t.section != Section::Forward));
    assert!(!kernels(&p, Section::Layer(2)).is_empty());
    assert!(kernels(&p, Section::Layer(3)).is_empty());
    // Chunks follow each other in time.
    let starts: Vec<f64> = p
        .timings
        .iter()
        .filter(|t| t.kernel == "embedding")
        .map(|t| t.start_ns)
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
}

#[test]
fn unsupported_modes_fail_cleanly_and_logits_need_all_logits() {
    let f = ctx().features();
    let m = tiny("mamba1", "tiny_tied");
    let mut s = m.session(&SessionOptions::default()).unwrap();
    if !f.timestamp_inside_passes {
        let r = s.prefill_profiled(&[PROMPT], ProfileMode::TimestampsInsidePass);
        assert!(matches!(r, Err(Error::MissingFeature(_))));
    }
    assert!(matches!(
        s.decode_profiled(ProfileMode::WallClock),
        Err(Error::InvalidInput(_))
    ));
    assert!(s.logits_profiled(&[PROMPT], ProfileMode::Auto).is_err());
}

#[test]
fn chrome_trace_is_well_formed() {
    let m = tiny("mamba1", "tiny_tied");
    let mut s = m.session(&SessionOptions::default()).unwrap();
    let (_, pp) = s.prefill_profiled(&[PROMPT], ProfileMode::Auto).unwrap();
    let (_, tg) = s.decode_profiled(ProfileMode::Auto).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    profile::write_chrome_trace(&path, &[&pp, &tg]).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let x: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(x.len(), pp.timings.len() + tg.timings.len());
    let decode_start = x[pp.timings.len()]["ts"].as_f64().unwrap();
    for e in &x {
        assert!(e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0);
        assert!(e["name"].is_string() && e["args"]["section"].is_string());
    }
    // Decode is laid out after prefill, on its own thread.
    assert!(decode_start >= pp.span_ns() / 1e3);
    assert_eq!(x[1]["args"]["layer"], 0);
    assert_eq!(x[1]["name"], norm());
    assert_eq!(events.iter().filter(|e| e["ph"] == "M").count(), 2);
}

/// Runs the read probe over `data` with `groups` workgroups and adds the partials (one per
/// invocation).
fn stream_sum(data: &[f32], groups: Option<u32>) -> f64 {
    assert_eq!(data.len() % 4, 0);
    let mut p = StreamReadParams::for_len((data.len() / 4) as u32);
    if let Some(g) = groups {
        p.groups = g;
    }
    let n = p.groups as usize * 256;
    let (buf, partial) = (upload(data), zeros(n));
    let d = StreamRead::new(ctx()).unwrap().bind(
        ctx(),
        &p,
        StreamReadBuffers {
            data: &buf,
            partial: &partial,
        },
    );
    run(ctx(), &[&d]).unwrap();
    read::<f32>(&partial, n).iter().map(|&x| f64::from(x)).sum()
}

#[test]
fn stream_read_sums_every_element_once() {
    // Hand-checked: 1 + 2 + 3 + 4 + 10 + 20 + 30 + 40 = 110.
    assert_eq!(
        stream_sum(&[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0], None),
        110.0
    );
    // vec4 counts around the workgroup (256), not multiples of it, past one pass of the grid,
    // and forced group counts so invocations loop (1 group) or sit idle (groups > needed).
    for (vec4s, groups) in [
        (1, None),
        (255, None),
        (256, None),
        (257, None),
        (4099, None),
        (70_001, None),
        (70_001, Some(1)),
        (1000, Some(3)),
        (5, Some(7)),
        // The geometry of 64 loads per invocation (the texture probe's best on lavapipe).
        (
            70_001,
            Some(StreamReadParams::with_loads(70_001, 64).groups),
        ),
    ] {
        let n = 4 * vec4s;
        // Small integers: every f32 partial below 2^24 is exact, so the sum must be exact.
        let ints: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32).collect();
        let want: f64 = ints.iter().map(|&x| f64::from(x)).sum();
        assert_eq!(stream_sum(&ints, groups), want, "{vec4s} vec4s, {groups:?}");
        // Random signs: f32 sums of at most ~300 terms per invocation, partials added in f64;
        // the error is below terms·2^-24·Σ|x| ≤ 2e-5·Σ|x| (70,001 vec4s on one group is the
        // longest run, 274 terms per invocation).
        let x = rand_vec(vec4s as u64, n, -1.0, 1.0);
        let want: f64 = x.iter().map(|&v| f64::from(v)).sum();
        let abs: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
        let got = stream_sum(&x, groups);
        assert!(
            (got - want).abs() <= 2e-5 * abs,
            "{vec4s} vec4s, {groups:?}: {got} vs {want}"
        );
    }
}

#[test]
fn bandwidth_probes_measure_something() {
    let c = profile::copy_bandwidth(ctx(), 1 << 20, 2).unwrap();
    let r = profile::read_bandwidth(ctx(), 1 << 20, 2).unwrap();
    // The texture probe checks its own sum (every texel read once) before timing; 1 MiB is
    // 65,536 texels, 16 lines of 4,096.
    let t = profile::texture_read_bandwidth(ctx(), 1 << 20, 2).unwrap();
    for b in [c, r, t] {
        assert!(b.gb_s.is_finite() && b.gb_s > 0.0, "{b:?}");
        assert_eq!(b.reps, 2);
    }
    assert_eq!(c.bytes, 2 << 20);
    assert_eq!(r.bytes, 1 << 20);
    assert_eq!(t.bytes, 1 << 20);
    eprintln!("copy {c:?}\nread {r:?}\ntexture read {t:?}");
    // 64 groups × 256 invocations × 100 rounds × 64 FLOPs.
    let f = profile::fma_rate(ctx(), 64, 100, 2).unwrap();
    assert_eq!(f.bytes, 64 * 256 * 100 * 64);
    assert!(f.gb_s.is_finite() && f.gb_s > 0.0, "{f:?}");
    eprintln!("fma {:.2} GFLOP/s", f.gb_s);
}
