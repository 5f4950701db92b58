//! conv1d (prefill) and conv1d_step (decode) against `reference::conv1d`, and against each
//! other: a prompt split across calls, or continued token by token, must equal one longer call.
//!
//! Tolerance: each output is silu of a sum of at most K + 1 <= 9 terms with |w·u| <= 0.5 and
//! |bias| <= 0.5, summed in the same order as the twin; the only differences are FMA
//! contraction (a few half-ulps of a sum below ~5) and the GPU's exp, so atol 1e-6 (for outputs
//! near silu's zero) plus rtol 1e-5. The state is a copy of inputs: exact.

use mamba_wgpu::kernels::conv1d::{Conv1d, Conv1dBuffers, Conv1dParams, TOKENS_PER_INVOCATION};
use mamba_wgpu::kernels::conv1d_step::Conv1dStep;
use mamba_wgpu::kernels::run;
use mamba_wgpu::reference::conv1d::{conv1d, silu, Conv1dShape};

use crate::common::*;

const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-5;
/// Fills the parts of x and out that the kernels must neither read nor write.
const X_FILL: f32 = f32::NAN;
const OUT_FILL: f32 = 12345.0;

/// Where x and out live in their buffers (the kernels' strided addressing).
#[derive(Clone, Copy, Debug)]
struct Layout {
    x_offset: usize,
    /// Extra elements after each row of x (x_stride = channels + x_pad).
    x_pad: usize,
    /// Extra elements after each row of out.
    out_pad: usize,
}

const DENSE: Layout = Layout {
    x_offset: 0,
    x_pad: 0,
    out_pad: 0,
};

impl Layout {
    /// x as the first half of an xz buffer (x_stride = 2·channels) behind an offset, and out
    /// rows padded.
    fn strided(channels: usize) -> Self {
        Self {
            x_offset: 5,
            x_pad: channels,
            out_pad: 3,
        }
    }
}

/// The conv weights of one test, and the GPU buffers holding them.
struct Weights {
    kernel: usize,
    channels: usize,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    weight_b: wgpu::Buffer,
    bias_b: wgpu::Buffer,
}

impl Weights {
    fn new(seed: u64, channels: usize, kernel: usize, has_bias: bool) -> Self {
        let weight = rand_vec(seed, channels * kernel, -0.5, 0.5);
        let bias = has_bias.then(|| rand_vec(seed + 1, channels, -0.5, 0.5));
        // Without bias a NaN buffer is bound, so reading it would show in the output.
        let bias_b = match &bias {
            Some(b) => upload(b),
            None => upload(&[f32::NAN]),
        };
        Self {
            kernel,
            channels,
            weight_b: upload(&weight),
            weight,
            bias,
            bias_b,
        }
    }

    fn shape(&self, batch: usize, len: usize) -> Conv1dShape {
        Conv1dShape {
            batch,
            len,
            channels: self.channels,
            kernel: self.kernel,
        }
    }
}

/// Runs `conv1d` (or `conv1d_step` when `step`) on `x` (`[batch, len, channels]`, placed per
/// `layout`), updating `state` on the GPU; returns out as `[batch, len, channels]` after
/// checking that the kernel left the out padding alone.
fn gpu_conv(
    w: &Weights,
    state: &wgpu::Buffer,
    x: &[f32],
    batch: usize,
    layout: Layout,
    step: bool,
) -> Vec<f32> {
    let ctx = ctx();
    let c = w.channels;
    let rows = x.len() / c;
    let len = rows / batch;
    let x_stride = c + layout.x_pad;
    let out_stride = c + layout.out_pad;
    let mut xs = vec![X_FILL; layout.x_offset + rows * x_stride];
    for r in 0..rows {
        xs[layout.x_offset + r * x_stride..][..c].copy_from_slice(&x[r * c..][..c]);
    }
    let x_b = upload(&xs);
    let out_b = upload(&vec![OUT_FILL; rows * out_stride]);
    let params = Conv1dParams {
        batch: batch as u32,
        len: len as u32,
        channels: c as u32,
        kernel: w.kernel as u32,
        x_offset: layout.x_offset as u32,
        x_stride: x_stride as u32,
        out_stride: out_stride as u32,
        has_bias: w.bias.is_some() as u32,
    };
    let buffers = Conv1dBuffers {
        x: &x_b,
        weight: &w.weight_b,
        bias: &w.bias_b,
        state,
        out: &out_b,
    };
    let d = if step {
        Conv1dStep::new(ctx).unwrap().bind(ctx, &params, buffers)
    } else {
        Conv1d::new(ctx).unwrap().bind(ctx, &params, buffers)
    };
    run(ctx, &[&d]).unwrap();
    let got = read::<f32>(&out_b, rows * out_stride);
    let mut out = Vec::with_capacity(rows * c);
    for (r, row) in got.chunks(out_stride).enumerate() {
        out.extend_from_slice(&row[..c]);
        assert!(
            row[c..].iter().all(|&v| v == OUT_FILL),
            "out padding of row {r} was written"
        );
    }
    out
}

fn initial_state(seed: u64, len: usize, nonzero: bool) -> Vec<f32> {
    if nonzero {
        rand_vec(seed, len, -1.0, 1.0)
    } else {
        vec![0.0; len]
    }
}

fn check_prefill(
    batch: usize,
    len: usize,
    channels: usize,
    kernel: usize,
    has_bias: bool,
    layout: Layout,
    nonzero_state: bool,
) {
    let what = format!(
        "conv1d batch {batch} len {len} channels {channels} K {kernel} bias {has_bias} {layout:?} nonzero state {nonzero_state}"
    );
    let seed = (batch * 1000 + len * 10 + channels * 7 + kernel) as u64;
    let w = Weights::new(seed, channels, kernel, has_bias);
    let x = rand_vec(seed + 2, batch * len * channels, -1.0, 1.0);
    let mut state = initial_state(seed + 3, batch * channels * (kernel - 1), nonzero_state);
    let state_b = upload(&state);
    let got = gpu_conv(&w, &state_b, &x, batch, layout, false);
    let want = conv1d(
        &x,
        &w.weight,
        w.bias.as_deref(),
        &mut state,
        w.shape(batch, len),
    );
    assert_close(&format!("{what}: out"), &got, &want, ATOL, RTOL);
    assert_close(
        &format!("{what}: state"),
        &read::<f32>(&state_b, state.len()),
        &state,
        0.0,
        0.0,
    );
}

#[test]
fn conv1d_twin_matches_hand_computed_cases() {
    // K = 2, one channel: w = [0.5, 2], bias 1, state [3], inputs [1, -1, 2].
    // Pre-activations: 1 + 0.5·3 + 2·1 = 4.5, 1 + 0.5·1 - 2·1 = -0.5, 1 - 0.5·1 + 2·2 = 4.5.
    let mut state = vec![3.0];
    let shape = Conv1dShape {
        batch: 1,
        len: 3,
        channels: 1,
        kernel: 2,
    };
    let out = conv1d(
        &[1.0, -1.0, 2.0],
        &[0.5, 2.0],
        Some(&[1.0]),
        &mut state,
        shape,
    );
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let want = [4.5 * sig(4.5), -0.5 * sig(-0.5), 4.5 * sig(4.5)];
    assert_close("hand K=2 out", &out, &want, 1e-7, 1e-7);
    assert_eq!(state, [2.0]);
    assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);

    // K = 3, one token (shorter than S = 2): state [a, b] -> [b, u]; out = silu(w·[a, b, u]).
    let mut state = vec![1.0, 2.0];
    let shape = Conv1dShape {
        batch: 1,
        len: 1,
        channels: 1,
        kernel: 3,
    };
    let out = conv1d(&[4.0], &[1.0, 10.0, 100.0], None, &mut state, shape);
    assert_close("hand K=3 out", &out, &[silu(421.0)], 0.0, 0.0);
    assert_eq!(state, [2.0, 4.0]);

    // Zero state = PyTorch's zero padding: two channels, K = 2, no bias.
    let mut state = vec![0.0, 0.0];
    let shape = Conv1dShape {
        batch: 1,
        len: 2,
        channels: 2,
        kernel: 2,
    };
    // x[t, c]: t0 = (1, 2), t1 = (3, 4); w[c] = (c0: [1, 1], c1: [0, -1]).
    let out = conv1d(
        &[1.0, 2.0, 3.0, 4.0],
        &[1.0, 1.0, 0.0, -1.0],
        None,
        &mut state,
        shape,
    );
    let want = [silu(1.0), silu(-2.0), silu(4.0), silu(-4.0)];
    assert_close("hand zero state out", &out, &want, 0.0, 0.0);
    assert_eq!(state, [3.0, 4.0]);
}

#[test]
fn conv1d_matches_reference_on_awkward_shapes() {
    let t = TOKENS_PER_INVOCATION as usize;
    let mut n = 0usize;
    for &kernel in &[2, 3, 4, 5] {
        let s = kernel - 1;
        for &channels in &[1, 7, 64, 72, 257] {
            for &batch in &[1, 3] {
                for &len in &[1, 2, s, s + 1, 37, 150, 300] {
                    // Rotate the options through the shapes (n·5 walks all 8 combinations).
                    let f = n * 5;
                    n += 1;
                    let layout = if f & 2 != 0 {
                        Layout::strided(channels)
                    } else {
                        DENSE
                    };
                    check_prefill(batch, len, channels, kernel, f & 1 != 0, layout, f & 4 != 0);
                }
            }
        }
    }
    // Every K up to 8, and lengths around the token block (block-1, block, block+1).
    for kernel in 2..=8 {
        for &len in &[kernel - 1, t - 1, t, t + 1, 2 * t + 3] {
            check_prefill(2, len, 65, kernel, true, Layout::strided(65), true);
        }
    }
}

#[test]
fn conv1d_prefill_split_across_calls_equals_one_call() {
    // (batch, channels, K, L1, L2): L1 < S, L1 = S, L1 > one token block, L2 < S...
    for &(batch, channels, kernel, l1, l2) in &[
        (1, 1, 2, 1, 1),
        (3, 72, 4, 1, 40),
        (1, 7, 4, 2, 1),
        (2, 64, 4, 3, 3),
        (2, 64, 5, 1, 2),
        (2, 64, 3, 37, 150),
        (1, 257, 5, 33, 3),
        (3, 7, 8, 5, 70),
    ] {
        for &nonzero in &[false, true] {
            let what = format!("split batch {batch} C {channels} K {kernel} L1 {l1} L2 {l2} nonzero state {nonzero}");
            let len = l1 + l2;
            let seed = (channels * 31 + kernel * 7 + l1 + l2) as u64;
            let w = Weights::new(seed, channels, kernel, true);
            let x = rand_vec(seed + 5, batch * len * channels, -1.0, 1.0);
            let mut state = initial_state(seed + 6, batch * channels * (kernel - 1), nonzero);
            let state_b = upload(&state);
            // The two calls see rows b·L1 + t and b·L2 + t of their own x.
            let part = |from: usize, to: usize| -> Vec<f32> {
                (0..batch)
                    .flat_map(|b| {
                        x[(b * len + from) * channels..(b * len + to) * channels].to_vec()
                    })
                    .collect()
            };
            let layout = Layout::strided(channels);
            let out1 = gpu_conv(&w, &state_b, &part(0, l1), batch, layout, false);
            let out2 = gpu_conv(&w, &state_b, &part(l1, len), batch, DENSE, false);
            let want = conv1d(
                &x,
                &w.weight,
                w.bias.as_deref(),
                &mut state,
                w.shape(batch, len),
            );
            let mut got = Vec::new();
            for b in 0..batch {
                got.extend_from_slice(&out1[b * l1 * channels..(b + 1) * l1 * channels]);
                got.extend_from_slice(&out2[b * l2 * channels..(b + 1) * l2 * channels]);
            }
            assert_close(&format!("{what}: out"), &got, &want, ATOL, RTOL);
            assert_close(
                &format!("{what}: state"),
                &read::<f32>(&state_b, state.len()),
                &state,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn conv1d_step_after_prefill_equals_one_longer_prefill() {
    // (batch, channels, K, prompt length, steps); prompt 0 starts decoding from the state.
    for &(batch, channels, kernel, prompt, steps) in &[
        (1, 1, 2, 1, 3),
        (3, 7, 4, 0, 5),
        (3, 72, 4, 1, 5),
        (2, 64, 3, 37, 4),
        (1, 65, 5, 2, 6),
        (2, 257, 8, 40, 9),
        (1, 63, 6, 3, 2),
        (2, 9, 7, 1, 8),
    ] {
        for &nonzero in &[false, true] {
            let what = format!(
                "step batch {batch} C {channels} K {kernel} prompt {prompt} steps {steps} nonzero state {nonzero}"
            );
            let len = prompt + steps;
            let seed = (channels * 13 + kernel * 3 + prompt * 5 + steps) as u64;
            let w = Weights::new(seed, channels, kernel, kernel.is_multiple_of(2));
            let x = rand_vec(seed + 7, batch * len * channels, -1.0, 1.0);
            let mut state = initial_state(seed + 8, batch * channels * (kernel - 1), nonzero);
            let state_b = upload(&state);
            let tokens = |t0: usize, t1: usize| -> Vec<f32> {
                (0..batch)
                    .flat_map(|b| x[(b * len + t0) * channels..(b * len + t1) * channels].to_vec())
                    .collect()
            };
            let mut outs = Vec::new();
            if prompt > 0 {
                outs.push((
                    prompt,
                    gpu_conv(&w, &state_b, &tokens(0, prompt), batch, DENSE, false),
                ));
            }
            for t in prompt..len {
                let layout = Layout::strided(channels);
                outs.push((
                    1,
                    gpu_conv(&w, &state_b, &tokens(t, t + 1), batch, layout, true),
                ));
            }
            let want = conv1d(
                &x,
                &w.weight,
                w.bias.as_deref(),
                &mut state,
                w.shape(batch, len),
            );
            let mut got = Vec::new();
            for b in 0..batch {
                for (l, o) in &outs {
                    got.extend_from_slice(&o[b * l * channels..(b + 1) * l * channels]);
                }
            }
            assert_close(&format!("{what}: out"), &got, &want, ATOL, RTOL);
            assert_close(
                &format!("{what}: state"),
                &read::<f32>(&state_b, state.len()),
                &state,
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn conv1d_step_matches_reference_on_awkward_shapes() {
    for kernel in 2..=8 {
        for &channels in &[1, 7, 63, 64, 65, 257] {
            for &batch in &[1, 3] {
                let has_bias = (kernel + channels) % 2 == 0;
                let seed = (kernel * 100 + channels + batch) as u64;
                let w = Weights::new(seed, channels, kernel, has_bias);
                let x = rand_vec(seed + 2, batch * channels, -1.0, 1.0);
                let mut state = initial_state(seed + 3, batch * channels * (kernel - 1), true);
                let state_b = upload(&state);
                let got = gpu_conv(&w, &state_b, &x, batch, Layout::strided(channels), true);
                let want = conv1d(
                    &x,
                    &w.weight,
                    w.bias.as_deref(),
                    &mut state,
                    w.shape(batch, 1),
                );
                let what = format!("step K {kernel} C {channels} batch {batch}");
                assert_close(&format!("{what}: out"), &got, &want, ATOL, RTOL);
                assert_close(
                    &format!("{what}: state"),
                    &read::<f32>(&state_b, state.len()),
                    &state,
                    0.0,
                    0.0,
                );
            }
        }
    }
}
