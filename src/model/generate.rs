//! Generation loops over a [`Session`]: prefill a prompt, then decode token after token until
//! a token budget, an end-of-sequence token, the caller's callback or a [`CancelToken`] set
//! from another thread stops it. Built only on the session's public calls
//! ([`Session::prefill`], [`Session::decode`]), so the tokens are exactly those of calling
//! them by hand, and a stopped session is left as those calls leave it: usable, continuing
//! from where it stopped, or [`Session::reset`] for new sequences.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::Session;

/// A flag that stops a generation between tokens; clones share the flag, so one clone can
/// stay with the generating thread and another go to whoever may cancel it.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every generation watching this token to stop before its next token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`CancelToken::cancel`] was called (since the last [`CancelToken::clear`]).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Clears the flag, so the token can watch another generation.
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How [`Session::generate`] runs.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens generated per sequence (the prefill's token counts); at least 1.
    pub max_tokens: usize,
    /// A sequence ends at this token (kept as its last token); the generation stops when
    /// every sequence of the batch has ended. `None` never stops early.
    pub eos_token: Option<u32>,
    /// Checked before the prefill and between tokens.
    pub cancel: Option<CancelToken>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            eos_token: None,
            cancel: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Every sequence produced [`GenerateOptions::max_tokens`] tokens.
    MaxTokens,
    /// Every sequence produced the end-of-sequence token.
    Eos,
    /// The callback returned [`ControlFlow::Break`].
    Callback,
    /// The [`CancelToken`] was set.
    Cancelled,
}

/// What a generation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Per sequence, the tokens generated (not the prompt), up to and including its
    /// end-of-sequence token.
    pub tokens: Vec<Vec<u32>>,
    /// Why it ended.
    pub stop: StopReason,
}

impl Session {
    /// Feeds `prompts` (one per sequence, equally long; they continue the sequences from their
    /// current state, like [`Session::prefill`]) and generates until `options` or `on_token`
    /// stop it. `on_token` sees each step's new tokens, one per sequence (a sequence that
    /// already ended keeps decoding with the batch, but its tokens are not kept), and may
    /// return [`ControlFlow::Break`] to stop after that token. Errors of the session's calls
    /// come back unchanged; the tokens generated before an error are lost with it, but the
    /// session stays usable.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use std::path::Path;
    /// use std::sync::Arc;
    /// use mamba_wgpu::model::generate::{CancelToken, GenerateOptions, StopReason};
    /// use mamba_wgpu::{GpuContext, Model, SessionOptions};
    ///
    /// let ctx = Arc::new(GpuContext::new()?);
    /// let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mamba1/tiny_tied");
    /// let model = Model::load(ctx, &dir)?;
    /// let mut session = model.session(&SessionOptions::default())?;
    ///
    /// // Another thread may call `cancel.cancel()` to stop the loop between two tokens.
    /// let cancel = CancelToken::new();
    /// let options = GenerateOptions {
    ///     max_tokens: 8,
    ///     eos_token: None,
    ///     cancel: Some(cancel.clone()),
    /// };
    /// let mut streamed = Vec::new();
    /// let out = session.generate(&[&[1, 2, 3]], &options, |step| {
    ///     streamed.push(step[0]);
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(out.stop, StopReason::MaxTokens);
    /// assert_eq!(out.tokens[0], streamed);
    /// assert_eq!(out.tokens[0].len(), 8);
    ///
    /// // The same session continues, or starts over after a reset.
    /// session.reset();
    /// let again = session.generate(&[&[1, 2, 3]], &options, |_| ControlFlow::Continue(()))?;
    /// assert_eq!(again.tokens, out.tokens);
    /// # Ok::<(), mamba_wgpu::Error>(())
    /// ```
    pub fn generate(
        &mut self,
        prompts: &[&[u32]],
        options: &GenerateOptions,
        mut on_token: impl FnMut(&[u32]) -> ControlFlow<()>,
    ) -> Result<Generation> {
        if options.max_tokens == 0 {
            return Err(Error::InvalidInput(
                "generate: max_tokens must be at least 1".into(),
            ));
        }
        let cancelled = || {
            options
                .cancel
                .as_ref()
                .is_some_and(CancelToken::is_cancelled)
        };
        let mut tokens = vec![Vec::new(); prompts.len()];
        if cancelled() {
            return Ok(Generation {
                tokens,
                stop: StopReason::Cancelled,
            });
        }
        let mut ended = vec![false; prompts.len()];
        let mut step = self.prefill(prompts)?;
        loop {
            for ((seq, done), &t) in tokens.iter_mut().zip(&mut ended).zip(&step) {
                if !*done {
                    seq.push(t);
                    *done = options.eos_token == Some(t);
                }
            }
            let stop = if on_token(&step).is_break() {
                Some(StopReason::Callback)
            } else if ended.iter().all(|&d| d) {
                Some(StopReason::Eos)
            } else if tokens
                .iter()
                .zip(&ended)
                .all(|(s, &d)| d || s.len() >= options.max_tokens)
            {
                Some(StopReason::MaxTokens)
            } else if cancelled() {
                Some(StopReason::Cancelled)
            } else {
                None
            };
            if let Some(stop) = stop {
                return Ok(Generation { tokens, stop });
            }
            step = self.decode()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_flag() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        std::thread::spawn(move || b.cancel()).join().unwrap();
        assert!(a.is_cancelled());
        a.clear();
        assert!(!a.is_cancelled());
    }
}
