//! Shared use: several sessions on one loaded model from several threads give exactly the
//! tokens serial runs give; a generation is stopped from another thread between tokens and
//! the session stays usable; the types an application shares across threads are Send + Sync.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use common::shared;
use mamba_wgpu::model::checkpoint::Checkpoint;
use mamba_wgpu::model::generate::{CancelToken, GenerateOptions, Generation, StopReason};
use mamba_wgpu::{GpuContext, Mamba1, Mamba2, Model, Sampling, Session, SessionOptions};

/// Compile-time: these cross threads. A `Model` is shared by reference (or cloned: clones
/// share the weights); a `Session` moves to the thread that drives it and may be borrowed
/// from another; a `CancelToken` is handed to whoever cancels.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<GpuContext>();
    send_sync::<Model>();
    send_sync::<Mamba1>();
    send_sync::<Mamba2>();
    send_sync::<Session>();
    send_sync::<CancelToken>();
    send_sync::<Checkpoint>();
    send_sync::<mamba_wgpu::Error>();
    send_sync::<mamba_wgpu::tokenizer::Tokenizer>();
};

fn fixture(family: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
        .join(name)
}

/// The settings each job runs with: greedy, and seeded sampling with each filter, so that a
/// race on the sampler's per-session state (step counters, seeds) would change tokens.
fn settings() -> Vec<(Vec<u32>, Sampling)> {
    let s = |temperature, top_k, top_p, seed| Sampling {
        temperature,
        top_k,
        top_p,
        seed,
    };
    vec![
        (vec![1, 2, 3], s(0.0, 0, 1.0, 0)),
        (vec![7], s(1.0, 0, 1.0, 11)),
        (vec![5, 9, 13, 2, 2], s(0.8, 5, 1.0, 12)),
        (vec![3, 1], s(1.3, 0, 0.9, 13)),
        (vec![4, 4, 4, 4, 4, 4, 4], s(0.0, 0, 1.0, 0)),
        (vec![60, 50], s(2.0, 20, 0.5, 14)),
    ]
}

const TOKENS: usize = 24;

fn opts(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..Default::default()
    }
}

fn run(model: &Model, prompt: &[u32], sampling: &Sampling) -> Generation {
    let mut s = model
        .session(&SessionOptions {
            sampling: sampling.clone(),
            ..Default::default()
        })
        .unwrap();
    s.generate(&[prompt], &opts(TOKENS), |_| ControlFlow::Continue(()))
        .unwrap()
}

fn models() -> Vec<Model> {
    vec![
        Model::load(shared().clone(), &fixture("mamba1", "tiny_tied")).unwrap(),
        Model::load(shared().clone(), &fixture("mamba2", "g1_small")).unwrap(),
    ]
}

#[test]
fn threads_sharing_a_model_give_the_serial_tokens() {
    for model in models() {
        let jobs = settings();
        let serial: Vec<Generation> = jobs.iter().map(|(p, s)| run(&model, p, s)).collect();
        for g in &serial {
            assert_eq!(g.stop, StopReason::MaxTokens);
            assert_eq!(g.tokens[0].len(), TOKENS);
        }
        // The sampled jobs must differ from greedy decoding, or they would not test the sampler.
        assert_ne!(
            serial[1].tokens,
            run(&model, &jobs[1].0, &Sampling::default()).tokens
        );

        // Every job on its own thread, three rounds each, all at once: one shared `&Model`
        // (scoped threads) for half the threads and a clone for the other half.
        let model = &model;
        let parallel: Vec<Vec<Generation>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .enumerate()
                .map(|(i, (p, s))| {
                    let own = (i % 2 == 1).then(|| model.clone());
                    scope.spawn(move || {
                        let m = own.as_ref().unwrap_or(model);
                        (0..3).map(|_| run(m, p, s)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, rounds) in parallel.iter().enumerate() {
            for g in rounds {
                assert_eq!(
                    g, &serial[i],
                    "job {i}: threaded tokens differ from serial ones"
                );
            }
        }
    }
}

/// One session per thread, each moved into its thread after being made on the main one.
#[test]
fn sessions_move_between_threads() {
    let model = Arc::new(Model::load(shared().clone(), &fixture("mamba1", "tiny_tied")).unwrap());
    let (p, s) = settings().swap_remove(2);
    let want = run(&model, &p, &s);
    let sessions: Vec<Session> = (0..3)
        .map(|_| {
            model
                .session(&SessionOptions {
                    sampling: s.clone(),
                    ..Default::default()
                })
                .unwrap()
        })
        .collect();
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|mut sess| {
            let p = p.clone();
            std::thread::spawn(move || {
                sess.generate(&[&p], &opts(TOKENS), |_| ControlFlow::Continue(()))
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

#[test]
fn cancel_from_another_thread_between_tokens() {
    for model in models() {
        let prompt = [1u32, 2, 3];
        // The serial run, longer than the cancelled one can get before it is stopped.
        let long = 200;
        let mut s = model.session(&SessionOptions::default()).unwrap();
        let serial = s
            .generate(&[&prompt], &opts(long), |_| ControlFlow::Continue(()))
            .unwrap();

        s.reset();
        let cancel = CancelToken::new();
        let (tx, rx) = mpsc::channel::<usize>();
        let (s, got) = std::thread::scope(|scope| {
            let c = cancel.clone();
            let gen = scope.spawn(move || {
                let mut n = 0;
                let options = GenerateOptions {
                    max_tokens: 1_000_000,
                    eos_token: None,
                    cancel: Some(c),
                };
                let got = s.generate(&[&prompt], &options, |_| {
                    n += 1;
                    let _ = tx.send(n);
                    ControlFlow::Continue(())
                });
                (s, got)
            });
            // Cancel once the generating thread reports its fifth token.
            while rx.recv().unwrap() < 5 {}
            cancel.cancel();
            gen.join().unwrap()
        });
        let mut s = s;
        let got = got.unwrap();
        assert_eq!(got.stop, StopReason::Cancelled);
        let n = got.tokens[0].len();
        // The flag is read between tokens: at least the five reported, and not many more
        // (the main thread cancels as soon as it reads the fifth).
        assert!(
            (5..long).contains(&n),
            "{n} tokens before the cancel took effect"
        );
        assert_eq!(
            got.tokens[0],
            serial.tokens[0][..n],
            "cancelled run is not a prefix"
        );
        assert_eq!(s.position(), prompt.len() + n - 1);

        // A cancelled token stops the next generation before the prefill, feeding nothing.
        let options = GenerateOptions {
            max_tokens: 10,
            eos_token: None,
            cancel: Some(cancel.clone()),
        };
        let pos = s.position();
        let none = s
            .generate(&[&prompt], &options, |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(
            (none.stop, none.tokens),
            (StopReason::Cancelled, vec![vec![]])
        );
        assert_eq!(s.position(), pos);

        // The session stays usable: reset and the same generation gives the serial tokens.
        cancel.clear();
        s.reset();
        let again = s
            .generate(&[&prompt], &opts(long), |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(again, serial);

        // And it continues where a cancelled generation left off: the token chosen last is
        // fed by the next decode, so the continuation is the serial run's next token.
        s.reset();
        let first = s
            .generate(&[&prompt], &opts(7), |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(first.tokens[0], serial.tokens[0][..7]);
        assert_eq!(s.decode().unwrap(), [serial.tokens[0][7]]);
    }
}

#[test]
fn callback_eos_and_budget_stop_generation() {
    let model = Model::load(shared().clone(), &fixture("mamba1", "tiny_tied")).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let prompt: &[u32] = &[9, 8, 7];
    let serial = s
        .generate(&[prompt], &opts(40), |_| ControlFlow::Continue(()))
        .unwrap()
        .tokens
        .remove(0);

    // The callback stops after its third token.
    s.reset();
    let mut seen = 0;
    let g = s
        .generate(&[prompt], &opts(40), |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(
        (g.stop, &g.tokens[0][..]),
        (StopReason::Callback, &serial[..3])
    );

    // End of sequence: the first position where some token occurs for the first time after
    // position 0, so the stop is not at the very first token.
    let k = (1..serial.len())
        .find(|&k| !serial[..k].contains(&serial[k]))
        .expect("greedy tokens that never change");
    s.reset();
    let g = s
        .generate(
            &[prompt],
            &GenerateOptions {
                max_tokens: 40,
                eos_token: Some(serial[k]),
                cancel: None,
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!((g.stop, &g.tokens[0][..]), (StopReason::Eos, &serial[..=k]));

    // max_tokens 1 is the prefill's token alone; 0 is refused.
    s.reset();
    let g = s
        .generate(&[prompt], &opts(1), |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(
        (g.stop, &g.tokens[0][..]),
        (StopReason::MaxTokens, &serial[..1])
    );
    s.reset();
    assert!(s
        .generate(&[prompt], &opts(0), |_| ControlFlow::Continue(()))
        .is_err());
}

/// In a batch, a sequence that ends keeps its tokens up to the end token while the others go
/// on; the generation ends when every sequence has ended or reached the budget.
#[test]
fn batches_end_sequence_by_sequence() {
    let model = Model::load(shared().clone(), &fixture("mamba1", "tiny_tied")).unwrap();
    let prompts: [&[u32]; 2] = [&[1, 2], &[3, 4]];
    let single: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| run(&model, p, &Sampling::default()).tokens.remove(0))
        .collect();
    let mut s = model
        .session(&SessionOptions {
            batch: 2,
            ..Default::default()
        })
        .unwrap();
    let g = s
        .generate(&prompts, &opts(TOKENS), |step| {
            assert_eq!(step.len(), 2);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(g.tokens, single);
    // End sequence 0 at a token that appears in neither sequence before (nor in sequence 1).
    let k = (1..TOKENS - 1)
        .find(|&k| !single[0][..k].contains(&single[0][k]) && !single[1].contains(&single[0][k]))
        .expect("no token ends sequence 0 alone");
    s.reset();
    let g = s
        .generate(
            &prompts,
            &GenerateOptions {
                max_tokens: TOKENS,
                eos_token: Some(single[0][k]),
                cancel: None,
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(g.stop, StopReason::MaxTokens);
    assert_eq!(g.tokens, [single[0][..=k].to_vec(), single[1].clone()]);
}

/// A device and queue the test owns (as an application that hands us its device would).
fn own_device() -> (wgpu::Device, wgpu::Queue) {
    pollster::block_on(async {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions::default())
            .await
            .expect("no adapter (install Mesa's lavapipe)");
        adapter
            .request_device(&wgpu::DeviceDescriptor {
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .unwrap()
    })
}

/// Runs `f` on its own thread and fails the test if it neither returns nor panics within a
/// minute (a hang on a lost device is a failure, not a stuck CI job).
fn within_a_minute<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the call hung on a destroyed device")
}

#[test]
fn device_loss_is_an_error_and_a_new_context_works() {
    let tiny = fixture("mamba1", "tiny_tied");
    let (device, queue) = own_device();
    let ctx = Arc::new(GpuContext::from_device(device.clone(), queue));
    let model = Model::load(ctx.clone(), &tiny).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    let want = s.prefill(&[&[1, 2, 3]]).unwrap();
    let want_next = s.decode().unwrap();

    device.destroy();
    // The next calls on the lost device return errors: no panic, no hang.
    let (mut s, errors) = within_a_minute(move || {
        let errors = [
            s.decode().map(drop),
            s.prefill(&[&[1, 2, 3]]).map(drop),
            // The async forms settle with an error too (the poll thread's poll fails or the
            // map is refused): a future that never resolved would hang here.
            pollster::block_on(s.decode_async()).map(drop),
            pollster::block_on(s.prefill_async(&[&[1, 2, 3]])).map(drop),
            // A new session on a lost device is refused when it is made.
            model.session(&SessionOptions::default()).map(drop),
        ];
        (s, errors)
    })
    .expect("a call on a destroyed device panicked");
    let errors_dbg = format!("{errors:?}");
    for e in errors {
        match e {
            Err(mamba_wgpu::Error::DeviceLost(_) | mamba_wgpu::Error::Gpu(_)) => {}
            other => panic!("expected DeviceLost or Gpu, got {other:?} (all: {errors_dbg})"),
        }
    }
    assert!(matches!(ctx.check(), Err(mamba_wgpu::Error::DeviceLost(_))));
    s.reset(); // harmless on a lost device
    drop(s);

    // A new context, model and session work, and give the tokens the first ones gave.
    let (device, queue) = own_device();
    let ctx = Arc::new(GpuContext::from_device(device, queue));
    let model = Model::load(ctx, &tiny).unwrap();
    let mut s = model.session(&SessionOptions::default()).unwrap();
    assert_eq!(s.prefill(&[&[1, 2, 3]]).unwrap(), want);
    assert_eq!(s.decode().unwrap(), want_next);
}

/// A future that is Send can be handed to a multi-threaded executor's spawn.
fn assert_send<T: Send>(t: T) -> T {
    t
}

/// The async forms give the blocking forms' tokens. `pollster::block_on` parks its thread
/// until the future's waker is called, so a future whose waker were never woken (the poll
/// thread not running, a lost map callback) would hang: each run has a minute.
#[test]
fn async_prefill_and_decode_give_the_blocking_tokens() {
    for model in models() {
        for (prompt, sampling) in settings() {
            let session = |m: &Model| {
                m.session(&SessionOptions {
                    sampling: sampling.clone(),
                    ..Default::default()
                })
                .unwrap()
            };
            let mut s = session(&model);
            let mut want = vec![s.prefill(&[&prompt]).unwrap()];
            for _ in 0..6 {
                want.push(s.decode().unwrap());
            }

            let mut s = session(&model);
            let p = prompt.clone();
            let got = within_a_minute(move || {
                pollster::block_on(assert_send(async move {
                    let mut got = vec![s.prefill_async(&[&p]).await.unwrap()];
                    for _ in 0..6 {
                        got.push(s.decode_async().await.unwrap());
                    }
                    got
                }))
            })
            .expect("an async call panicked");
            assert_eq!(got, want, "prompt {prompt:?}, {sampling:?}");
        }
    }
}

/// A future dropped after its work was submitted (a caller that gave up waiting) cancels
/// only the readback: the session has taken the step, its readback buffer is usable again,
/// and the next decode continues from the dropped step's token, fed on the GPU.
#[test]
fn dropping_an_async_decode_keeps_the_session_consistent() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    for model in models() {
        let mut s = model.session(&SessionOptions::default()).unwrap();
        let mut want = vec![s.prefill(&[&[5, 6, 7]]).unwrap()];
        for _ in 0..3 {
            want.push(s.decode().unwrap());
        }

        let mut s = model.session(&SessionOptions::default()).unwrap();
        let first = pollster::block_on(s.prefill_async(&[&[5, 6, 7]])).unwrap();
        assert_eq!(first, want[0]);
        {
            let mut fut = std::pin::pin!(s.decode_async());
            let mut cx = Context::from_waker(Waker::noop());
            // The first poll submits the step; the result is thrown away whether it is
            // ready already or not.
            let _ = matches!(fut.as_mut().poll(&mut cx), Poll::Ready(_));
        }
        assert_eq!(s.position(), 4, "the dropped step was taken");
        assert_eq!(s.decode().unwrap(), want[2]);
        assert_eq!(pollster::block_on(s.decode_async()).unwrap(), want[3]);
    }
}
