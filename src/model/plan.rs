//! Recorded plans: a list of dispatches whose bind groups and buffers were made once, with the
//! rule that turns a token count into each dispatch's params. A forward writes the params that
//! changed, records every dispatch into one compute pass and submits once.

use crate::context::GpuContext;
use crate::kernels::Dispatch;

type ParamsFn = Box<dyn Fn(u32) -> (Vec<u8>, [u32; 3]) + Send + Sync>;

/// One dispatch of a plan and how its params follow the token count.
pub(crate) struct Step {
    dispatch: Dispatch,
    params_for: ParamsFn,
    current: Option<u32>,
}

/// A list of steps recorded in order.
#[derive(Default)]
pub(crate) struct Plan {
    steps: Vec<Step>,
    marks: Vec<usize>,
}

impl Plan {
    /// Adds a dispatch. `params_for(len)` gives the params for `len` tokens per sequence;
    /// `bind` creates the dispatch from the params for the plan's capacity.
    pub fn push<P: bytemuck::Pod>(
        &mut self,
        capacity: u32,
        params_for: impl Fn(u32) -> P + Send + Sync + 'static,
        workgroups: fn(&P) -> [u32; 3],
        bind: impl FnOnce(&P) -> Dispatch,
    ) {
        let dispatch = bind(&params_for(capacity));
        let f: ParamsFn = Box::new(move |len| {
            let p = params_for(len);
            (bytemuck::bytes_of(&p).to_vec(), workgroups(&p))
        });
        self.steps.push(Step {
            dispatch,
            params_for: f,
            current: Some(capacity),
        });
    }

    /// Marks the next step as the start of a section (a block, the head) for profiles.
    pub fn mark(&mut self) {
        self.marks.push(self.steps.len());
    }

    /// The step indices [`Plan::mark`] recorded, in order.
    pub fn marks(&self) -> &[usize] {
        &self.marks
    }

    /// Rewrites the params of every step whose token count differs from `len`.
    pub fn set_len(&mut self, ctx: &GpuContext, len: u32) {
        for s in &mut self.steps {
            if s.current != Some(len) {
                let (bytes, wg) = (s.params_for)(len);
                s.dispatch.update_bytes(ctx, &bytes, wg);
                s.current = Some(len);
            }
        }
    }

    /// Records every step into compute passes of `enc` (one pass, cut where a step needs a
    /// copy in front of it: see [`crate::kernels::encode_all`]).
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder, label: &str) {
        crate::kernels::encode_all(enc, label, self.steps.iter().map(|s| &s.dispatch));
    }

    /// Every step's dispatch with its current params as 4-byte words, in record order (for
    /// profiling: a timed forward records the dispatches itself, and the words name shapes).
    pub fn steps(&self) -> impl Iterator<Item = (&Dispatch, Vec<u32>)> + '_ {
        self.steps.iter().map(|s| {
            let words = s
                .current
                .map(|len| {
                    let (bytes, _) = (s.params_for)(len);
                    bytes
                        .chunks_exact(4)
                        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                        .collect()
                })
                .unwrap_or_default();
            (&s.dispatch, words)
        })
    }

    /// Dispatches recorded per forward (empty ones are skipped at record time but counted here).
    pub fn len(&self) -> usize {
        self.steps.len()
    }
}
