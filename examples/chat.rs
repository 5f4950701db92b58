//! A native window that shares its wgpu device with the model and streams the generated text
//! into the window as it is decoded.
//!
//! eframe's wgpu renderer creates the device (asking for the adapter's own limits and the
//! optional features the kernels use); [`GpuContext::from_device`] wraps clones of that same
//! `Device` and `Queue`, so the model's compute passes and the window's render passes go to one
//! queue and no second device is made. A worker thread owns the model and its session and sends
//! each step's new text to the window through a channel; Stop takes effect between two tokens.
//!
//! ```text
//! cargo run --release --features chat --example chat -- [--model PATH] [--prompt TEXT]
//!     [--autostart] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//!     [--screenshot FILE.png --exit-after-secs N]
//! ```
//!
//! Without `--model` it runs the model the repository ships (`models/tiny-mamba-en`), or the
//! tiny test fixture when that folder is absent; a model without a tokenizer takes and shows
//! token ids.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use eframe::egui;
use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupCreateNew};
use mamba_wgpu::model::{CancelToken, GenerateOptions, StopReason};
use mamba_wgpu::tokenizer::Tokenizer;
use mamba_wgpu::{GpuContext, LoadOptions, Model, Sampling, SessionOptions, WeightStorage};

#[derive(Parser)]
struct Args {
    /// Checkpoint folder or .gguf file [default: models/tiny-mamba-en, else the test fixture
    /// tests/fixtures/mamba1/tiny_tied].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Text to put in the prompt box (comma- or space-separated ids for a model without a
    /// tokenizer).
    #[arg(long)]
    prompt: Option<String>,
    /// Start generating as soon as the model is loaded.
    #[arg(long)]
    autostart: bool,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: u32,
    /// Keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Save a PNG of the window after --exit-after-secs, then close it.
    #[arg(long, requires = "exit_after_secs")]
    screenshot: Option<PathBuf>,
    /// Close the window this many seconds after it opens (after the screenshot, if any).
    #[arg(long)]
    exit_after_secs: Option<f64>,
}

/// The model the repository ships, or the test fixture while that is absent.
fn default_model() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = root.join("models/tiny-mamba-en");
    if shipped.join("config.json").is_file() {
        shipped
    } else {
        root.join("tests/fixtures/mamba1/tiny_tied")
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model_path = args.model.clone().unwrap_or_else(default_model);

    // eframe creates the device; ask for what `GpuContext::new` would: the adapter's limits
    // (bigger storage bindings than the WebGPU defaults) and the features kernels choose
    // faster variants from. Timestamps are left out: the window does not profile.
    let mut setup = WgpuSetupCreateNew::without_display_handle();
    setup.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| {
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        wgpu::DeviceDescriptor {
            label: Some("mamba_wgpu chat"),
            required_features: adapter.features() & wanted,
            required_limits: adapter.limits(),
            ..Default::default()
        }
    });
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default()
            .with_title("mamba-wgpu chat")
            .with_inner_size([960.0, 640.0]),
        wgpu_options: WgpuConfiguration {
            wgpu_setup: WgpuSetup::CreateNew(setup),
            ..Default::default()
        },
        ..Default::default()
    };
    eframe::run_native(
        "mamba-wgpu chat",
        options,
        Box::new(move |cc| Ok(Box::new(ChatApp::new(cc, args, model_path)?))),
    )?;
    Ok(())
}

/// What the window asks of the worker.
enum Request {
    Generate {
        prompt: String,
        sampling: Sampling,
        max_tokens: usize,
    },
}

/// What the worker tells the window.
enum Event {
    /// The model is on the GPU.
    Loaded {
        summary: String,
        has_tokenizer: bool,
    },
    /// A generation began with this many prompt tokens.
    Started { prompt_tokens: usize },
    /// Text to append to the generated text.
    Append(String),
    /// The whole generated text, when decoding a longer list changed text already shown.
    Replace(String),
    /// Tokens generated so far, the prefill's seconds and the decode rate.
    Progress {
        tokens: usize,
        prefill_s: f64,
        decode_tps: f64,
    },
    /// The generation ended.
    Finished(StopReason),
    /// Loading or generating failed.
    Failed(String),
}

/// Turns the growing list of generated ids into text for the window. Byte-level BPE splits
/// a multi-byte character over several tokens, and a decoder may change earlier text (a
/// space merged at a word boundary), so each step decodes prompt and generated ids together
/// and sends only what is new after the prompt's text; a trailing U+FFFD (a character whose
/// bytes have not all arrived) is held back until the next token completes it.
struct Streamer<'a> {
    tokenizer: Option<&'a Tokenizer>,
    ids: Vec<u32>,
    prompt_len: usize,
    prompt_text: String,
    sent: String,
}

impl<'a> Streamer<'a> {
    fn new(tokenizer: Option<&'a Tokenizer>, prompt: &[u32]) -> mamba_wgpu::Result<Self> {
        let prompt_text = match tokenizer {
            Some(t) => t.decode(prompt)?,
            None => String::new(),
        };
        Ok(Self {
            tokenizer,
            ids: prompt.to_vec(),
            prompt_len: prompt.len(),
            prompt_text,
            sent: String::new(),
        })
    }

    /// The generated text so far; with `hold_incomplete`, without a trailing U+FFFD.
    fn text(&self, hold_incomplete: bool) -> mamba_wgpu::Result<String> {
        let Some(tok) = self.tokenizer else {
            let ids: Vec<String> = self.ids[self.prompt_len..]
                .iter()
                .map(u32::to_string)
                .collect();
            return Ok(ids.join(" ") + " ");
        };
        let full = tok.decode(&self.ids)?;
        let mut text = match full.strip_prefix(&self.prompt_text) {
            Some(rest) => rest.to_string(),
            None => tok.decode(&self.ids[self.prompt_len..])?,
        };
        if hold_incomplete {
            let keep = text.trim_end_matches('\u{FFFD}').len();
            text.truncate(keep);
        }
        Ok(text)
    }

    /// The event that brings the window from what it shows to `text`, if any.
    fn update(&mut self, text: String) -> Option<Event> {
        let event = match text.strip_prefix(self.sent.as_str()) {
            Some("") => return None,
            Some(new) => Event::Append(new.to_string()),
            None => Event::Replace(text.clone()),
        };
        self.sent = text;
        Some(event)
    }

    /// Adds a generated token.
    fn push(&mut self, id: u32) -> mamba_wgpu::Result<Option<Event>> {
        self.ids.push(id);
        let text = self.text(true)?;
        Ok(self.update(text))
    }

    /// Everything held back, invalid bytes included, at the end of a generation.
    fn finish(&mut self) -> mamba_wgpu::Result<Option<Event>> {
        let text = self.text(false)?;
        Ok(self.update(text))
    }
}

/// The longest a streamed token waits before the window shows it: 30 frames a second on a
/// GPU. The window renders on the model's queue, and on a CPU adapter (lavapipe) a frame
/// costs as much as tens of tokens: at 30 frames a second the tiny fixture decoded 20-30
/// tokens/s instead of 350-500 with a device of its own; at 4 frames a second it keeps
/// most of that.
const STREAM_FRAME_GPU: Duration = Duration::from_millis(33);
const STREAM_FRAME_CPU: Duration = Duration::from_millis(250);

/// The worker's end of the channels.
struct Worker {
    events: Sender<Event>,
    repaint: egui::Context,
    cancel: CancelToken,
    ignore_eos: bool,
    /// Longest wait for a repaint while streaming.
    frame: Duration,
}

impl Worker {
    fn send(&self, event: Event) {
        // Text and progress repaint within `frame` (egui keeps the earliest request, so a
        // fast model gets one repaint per frame, not one per token); the rest repaint now.
        let streaming = matches!(
            event,
            Event::Append(_) | Event::Replace(_) | Event::Progress { .. }
        );
        // A closed window drops the receiver; the worker then ends with the request channel.
        let _ = self.events.send(event);
        if streaming {
            self.repaint.request_repaint_after(self.frame);
        } else {
            self.repaint.request_repaint();
        }
    }

    /// Loads the model, then serves requests until the window closes.
    fn run(
        self,
        ctx: Arc<GpuContext>,
        cpu_adapter: bool,
        path: PathBuf,
        requests: Receiver<Request>,
    ) {
        let t = Instant::now();
        // The context cannot tell a CPU adapter from a device it was handed; the window
        // knows, and texture-stored weights stream several times faster there.
        let storage = if cpu_adapter {
            WeightStorage::Texture
        } else {
            WeightStorage::Auto
        };
        let loaded = Model::load_with(
            ctx,
            &path,
            &LoadOptions {
                storage,
                ..Default::default()
            },
        )
        .and_then(|model| {
            let tokenizer = Tokenizer::for_model(&path)?;
            let session = model.session(&SessionOptions::default())?;
            Ok((model, tokenizer, session))
        });
        let (model, tokenizer, mut session) = match loaded {
            Ok(l) => l,
            Err(e) => return self.send(Event::Failed(format!("{}: {e}", path.display()))),
        };
        let family = match &model {
            Model::Mamba1(_) => "Mamba-1",
            Model::Mamba2(_) => "Mamba-2",
        };
        self.send(Event::Loaded {
            summary: format!(
                "{} ({family}, vocab {}, {:.1} MB of weights, loaded in {:.2} s)",
                path.file_name()
                    .unwrap_or(path.as_os_str())
                    .to_string_lossy(),
                model.vocab(),
                model.weight_bytes() as f64 / 1e6,
                t.elapsed().as_secs_f64()
            ),
            has_tokenizer: tokenizer.is_some(),
        });
        for request in requests {
            let Request::Generate {
                prompt,
                sampling,
                max_tokens,
            } = request;
            let options = GenerateOptions {
                max_tokens,
                eos_token: model.eos_token_id().filter(|_| !self.ignore_eos),
                cancel: Some(self.cancel.clone()),
            };
            let run = self.generate(
                &mut session,
                tokenizer.as_ref(),
                &prompt,
                sampling,
                &options,
            );
            match run {
                Ok(stop) => self.send(Event::Finished(stop)),
                Err(e) => self.send(Event::Failed(e.to_string())),
            }
        }
    }

    fn generate(
        &self,
        session: &mut mamba_wgpu::Session,
        tokenizer: Option<&Tokenizer>,
        prompt: &str,
        sampling: Sampling,
        options: &GenerateOptions,
    ) -> Result<StopReason, Box<dyn std::error::Error>> {
        let ids = match tokenizer {
            Some(t) => t.encode(prompt)?,
            None => parse_ids(prompt)?,
        };
        if ids.is_empty() {
            return Err("the prompt is empty".into());
        }
        // Each request starts a new sequence from the prompt.
        session.reset();
        session.set_sampling(sampling)?;
        self.send(Event::Started {
            prompt_tokens: ids.len(),
        });
        let mut stream = Streamer::new(tokenizer, &ids)?;
        let mut failed = None;
        let t0 = Instant::now();
        let mut first: Option<Instant> = None;
        let mut tokens = 0usize;
        let out = session.generate(&[&ids], options, |step| {
            let now = Instant::now();
            let first = *first.get_or_insert(now);
            tokens += 1;
            match stream.push(step[0]) {
                Ok(Some(event)) => self.send(event),
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
            }
            let decode_s = (now - first).as_secs_f64();
            self.send(Event::Progress {
                tokens,
                prefill_s: (first - t0).as_secs_f64(),
                decode_tps: if tokens > 1 {
                    (tokens - 1) as f64 / decode_s
                } else {
                    0.0
                },
            });
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if let Some(event) = stream.finish()? {
            self.send(event);
        }
        Ok(out.stop)
    }
}

/// Token ids typed as `1, 2, 3` or `1 2 3`.
fn parse_ids(text: &str) -> Result<Vec<u32>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("this model has no tokenizer: type token ids, not {s:?}"))
        })
        .collect()
}

/// A screenshot to take at a time after start, and the close that follows it.
struct Exit {
    at: Instant,
    screenshot: Option<PathBuf>,
    requested: bool,
    done: Arc<AtomicBool>,
}

struct ChatApp {
    prompt: String,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    seed: u64,
    max_tokens: usize,
    /// The prompt of the last request and the text generated after it.
    shown_prompt: String,
    generated: String,
    adapter: String,
    model: String,
    loaded: bool,
    has_tokenizer: bool,
    generating: bool,
    state: String,
    prompt_tokens: usize,
    tokens: usize,
    prefill_s: f64,
    decode_tps: f64,
    autostart: bool,
    exit: Option<Exit>,
    /// `None` once the window is closing.
    requests: Option<Sender<Request>>,
    events: Receiver<Event>,
    cancel: CancelToken,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl ChatApp {
    fn new(
        cc: &eframe::CreationContext<'_>,
        args: Args,
        model_path: PathBuf,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let render = cc
            .wgpu_render_state
            .as_ref()
            .ok_or("eframe started without its wgpu renderer")?;
        // The same device and queue the window renders with (wgpu handles are reference
        // counted: these clones are not new devices).
        let ctx = Arc::new(GpuContext::from_device(
            render.device.clone(),
            render.queue.clone(),
        ));
        let info = render.adapter.get_info();
        let adapter = format!("{} ({:?})", info.name, info.backend);
        let cpu_adapter = info.device_type == wgpu::DeviceType::Cpu;

        let (request_tx, request_rx) = mpsc::channel();
        let (event_tx, event_rx) = mpsc::channel();
        let cancel = CancelToken::new();
        let worker = Worker {
            events: event_tx,
            repaint: cc.egui_ctx.clone(),
            cancel: cancel.clone(),
            ignore_eos: args.ignore_eos,
            frame: if cpu_adapter {
                STREAM_FRAME_CPU
            } else {
                STREAM_FRAME_GPU
            },
        };
        let path = model_path.clone();
        let worker = std::thread::Builder::new()
            .name("mamba-worker".into())
            .spawn(move || worker.run(ctx, cpu_adapter, path, request_rx))?;

        let exit = args.exit_after_secs.map(|s| Exit {
            at: Instant::now() + Duration::from_secs_f64(s.max(0.0)),
            screenshot: args.screenshot.clone(),
            requested: false,
            done: Arc::new(AtomicBool::new(false)),
        });
        Ok(Self {
            prompt: args.prompt.unwrap_or_default(),
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            max_tokens: args.max_tokens.max(1),
            shown_prompt: String::new(),
            generated: String::new(),
            adapter,
            model: format!("loading {} ...", model_path.display()),
            loaded: false,
            has_tokenizer: false,
            generating: false,
            state: "loading".into(),
            prompt_tokens: 0,
            tokens: 0,
            prefill_s: 0.0,
            decode_tps: 0.0,
            autostart: args.autostart,
            exit,
            requests: Some(request_tx),
            events: event_rx,
            cancel,
            worker: Some(worker),
        })
    }

    fn start(&mut self) {
        if !self.loaded || self.generating {
            return;
        }
        // Cleared here, not in the worker, so a Stop pressed before the worker picks the
        // request up still counts.
        self.cancel.clear();
        let request = Request::Generate {
            prompt: self.prompt.clone(),
            sampling: Sampling {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            max_tokens: self.max_tokens,
        };
        let sent = self.requests.as_ref().map(|r| r.send(request));
        if !matches!(sent, Some(Ok(()))) {
            self.state = "the worker thread has ended".into();
            return;
        }
        self.generating = true;
        self.shown_prompt = self.prompt.clone();
        self.generated.clear();
        self.tokens = 0;
        self.decode_tps = 0.0;
        self.prefill_s = 0.0;
        self.state = "prefill".into();
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Loaded {
                    summary,
                    has_tokenizer,
                } => {
                    self.loaded = true;
                    self.has_tokenizer = has_tokenizer;
                    self.model = summary;
                    self.state = "ready".into();
                    if !has_tokenizer && self.prompt.is_empty() {
                        self.prompt = "1, 2, 3".into();
                    }
                    if self.autostart {
                        self.start();
                    }
                }
                Event::Started { prompt_tokens } => {
                    self.prompt_tokens = prompt_tokens;
                }
                Event::Append(text) => self.generated.push_str(&text),
                Event::Replace(text) => self.generated = text,
                Event::Progress {
                    tokens,
                    prefill_s,
                    decode_tps,
                } => {
                    self.tokens = tokens;
                    self.prefill_s = prefill_s;
                    self.decode_tps = decode_tps;
                    self.state = "generating".into();
                }
                Event::Finished(stop) => {
                    self.generating = false;
                    self.state = match stop {
                        StopReason::MaxTokens => "done (token budget)",
                        StopReason::Eos => "done (end of text)",
                        StopReason::Cancelled | StopReason::Callback => "stopped",
                    }
                    .into();
                }
                Event::Failed(e) => {
                    self.generating = false;
                    self.state = format!("error: {e}");
                }
            }
        }
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.add_space(4.0);
        let hint = if self.loaded && !self.has_tokenizer {
            "token ids, e.g. 1, 2, 3 (this model has no tokenizer)"
        } else {
            "Type a prompt; Ctrl+Enter generates"
        };
        let edit = egui::TextEdit::multiline(&mut self.prompt)
            .hint_text(hint)
            .desired_rows(3)
            .desired_width(f32::INFINITY);
        let response = ui.add_enabled(!self.generating, edit);
        let ctrl_enter = response.has_focus()
            && ui.input(|i| i.key_pressed(egui::Key::Enter) && i.modifiers.command);
        ui.horizontal(|ui| {
            let can_start = self.loaded && !self.generating;
            if ui
                .add_enabled(can_start, egui::Button::new("Generate"))
                .clicked()
                || (can_start && ctrl_enter)
            {
                self.start();
            }
            if ui
                .add_enabled(self.generating, egui::Button::new("Stop"))
                .clicked()
            {
                self.cancel.cancel();
                self.state = "stopping".into();
            }
            ui.separator();
            ui.add(egui::Slider::new(&mut self.max_tokens, 1..=1024).text("max tokens"));
        });
        ui.horizontal_wrapped(|ui| {
            ui.add(
                egui::Slider::new(&mut self.temperature, 0.0..=2.0)
                    .text("temperature")
                    .fixed_decimals(2),
            );
            ui.add(egui::Slider::new(&mut self.top_k, 0..=200).text("top-k"));
            ui.add(egui::Slider::new(&mut self.top_p, 0.05..=1.0).text("top-p"));
            ui.add(egui::DragValue::new(&mut self.seed).prefix("seed "));
        });
        ui.add_space(4.0);
    }

    fn status(&self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!(
                "adapter: {} (shared with the window)",
                self.adapter
            ));
            ui.separator();
            ui.label(format!("model: {}", self.model));
        });
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("state: {}", self.state));
            if self.tokens > 0 {
                ui.separator();
                ui.label(format!(
                    "prompt {} tokens, prefill {:.0} ms",
                    self.prompt_tokens,
                    self.prefill_s * 1e3
                ));
                ui.separator();
                ui.label(format!(
                    "generated {} tokens, decode {:.1} tokens/s",
                    self.tokens, self.decode_tps
                ));
            }
        });
    }

    fn transcript(&self, ui: &mut egui::Ui) {
        let font = egui::TextStyle::Body.resolve(ui.style());
        let mut job = egui::text::LayoutJob::default();
        let prompt_format = egui::TextFormat {
            font_id: font.clone(),
            color: ui.visuals().weak_text_color(),
            ..Default::default()
        };
        let text_format = egui::TextFormat {
            font_id: font,
            color: ui.visuals().strong_text_color(),
            ..Default::default()
        };
        let separator = if self.has_tokenizer { "" } else { " » " };
        job.append(&self.shown_prompt, 0.0, prompt_format.clone());
        job.append(separator, 0.0, prompt_format);
        job.append(&self.generated, 0.0, text_format);
        job.wrap.max_width = ui.available_width();
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .stick_to_bottom(true)
            .show(ui, |ui| {
                // No spinner: it repaints every frame, and each frame is rendered on the queue
                // the model computes on.
                ui.label(job);
            });
    }

    fn handle_exit(&mut self, ctx: &egui::Context) {
        let Some(exit) = &mut self.exit else { return };
        if exit.done.load(Ordering::Acquire) {
            self.cancel.cancel();
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        let now = Instant::now();
        if now < exit.at {
            ctx.request_repaint_after(exit.at - now);
            return;
        }
        if exit.requested {
            return;
        }
        exit.requested = true;
        let Some(path) = exit.screenshot.clone() else {
            exit.done.store(true, Ordering::Release);
            ctx.request_repaint();
            return;
        };
        let done = exit.done.clone();
        let repaint = ctx.clone();
        ctx.request_screenshot(move |image| {
            match save_png(&path, &image) {
                Ok(()) => eprintln!("screenshot: {}", path.display()),
                Err(e) => eprintln!("screenshot {}: {e}", path.display()),
            }
            done.store(true, Ordering::Release);
            repaint.request_repaint();
        });
    }
}

/// Writes the window's pixels as an RGB PNG (the window is opaque; dropping alpha keeps the
/// file small).
fn save_png(path: &Path, image: &egui::ColorImage) -> Result<(), Box<dyn std::error::Error>> {
    let [w, h] = image.size;
    let rgb: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(|c| [c.r(), c.g(), c.b()])
        .collect();
    let buffer = image::RgbImage::from_raw(w as u32, h as u32, rgb).ok_or("bad image size")?;
    buffer.save_with_format(path, image::ImageFormat::Png)?;
    Ok(())
}

impl eframe::App for ChatApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.drain_events();
        let ctx = ui.ctx().clone();
        egui::Panel::top("controls").show(ui, |ui| self.controls(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status(ui));
        egui::CentralPanel::default_margins().show(ui, |ui| self.transcript(ui));
        self.handle_exit(&ctx);
    }

    fn on_exit(&mut self) {
        // Stop between tokens, end the worker's loop by dropping the request sender, and wait
        // for it: the worker's last submissions must finish before eframe tears the device's
        // window surface down (lavapipe crashed when the process exited under them).
        self.cancel.cancel();
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
