//! CPU twin of `shaders/conv1d.wgsl` (prefill) and `shaders/conv1d_step.wgsl` (one token):
//! causal depthwise conv1d + bias + SiLU that continues from, and updates, the conv state.

/// The shape of one conv1d call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dShape {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence in this call.
    pub len: usize,
    /// Channels.
    pub channels: usize,
    /// Taps K (the state holds K-1 inputs per channel).
    pub kernel: usize,
}

/// `v · sigmoid(v)`, written as the shaders write it.
pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// Causal depthwise conv1d + bias + SiLU over `len` tokens of each sequence, continuing from
/// the conv state and updating it.
///
/// - `x`: `[batch, len, channels]` inputs u (contiguous; the kernels' strides and offsets are a
///   matter of addressing, not of the math).
/// - `weight`: `[channels, kernel]` (PyTorch's `[channels, 1, kernel]`).
/// - `bias`: `[channels]`, or `None` for no bias.
/// - `state`: `[batch, channels, kernel-1]`, the previous K-1 inputs of each channel oldest
///   first (zeros for a new sequence); afterwards it holds the last K-1 values of
///   (old state ++ this call's inputs), so a call shorter than K-1 keeps part of the old state.
///
/// Returns `[batch, len, channels]` with
/// `out[b,t,c] = silu(bias[c] + Σ_{j<K} weight[c·K + j] · u[b, t + j - (K-1), c])`, where u at
/// negative times is `state[b, c, K-1 + t]`. With a zero state this equals PyTorch's
/// `silu(nn.Conv1d(groups=channels, padding=K-1)(x)[..., :len])`. One token (`len` = 1) is the
/// decoding step of `conv1d_step`.
pub fn conv1d(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    state: &mut [f32],
    shape: Conv1dShape,
) -> Vec<f32> {
    let Conv1dShape {
        batch,
        len,
        channels,
        kernel,
    } = shape;
    let s = kernel - 1;
    assert_eq!(
        x.len(),
        batch * len * channels,
        "x is [batch, len, channels]"
    );
    assert_eq!(
        weight.len(),
        channels * kernel,
        "weight is [channels, kernel]"
    );
    assert_eq!(
        state.len(),
        batch * channels * s,
        "state is [batch, channels, kernel-1]"
    );
    let mut out = vec![0.0; x.len()];
    for b in 0..batch {
        for c in 0..channels {
            let old = &mut state[(b * channels + c) * s..][..s];
            // The whole input stream of this channel: the old state, then this call's inputs.
            let mut u: Vec<f32> = old.to_vec();
            u.extend((0..len).map(|t| x[(b * len + t) * channels + c]));
            for t in 0..len {
                // Output t sees stream positions t..t+K (stream index = time + K-1).
                let mut acc = bias.map_or(0.0, |bias| bias[c]);
                for j in 0..kernel {
                    acc += weight[c * kernel + j] * u[t + j];
                }
                out[(b * len + t) * channels + c] = silu(acc);
            }
            old.copy_from_slice(&u[u.len() - s..]);
        }
    }
    out
}
