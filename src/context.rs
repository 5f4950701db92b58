//! Device setup in one place: adapter choice, the features and limits actually present, the
//! pipeline cache, and the hooks that turn device errors and device loss into [`Error`] values.
//! Every other module reaches wgpu's device-level API through this type, so a wgpu upgrade
//! touches few files.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

/// How to choose and configure the device when the library creates it.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Prefer a discrete (high performance) or integrated (low power) adapter.
    pub power_preference: wgpu::PowerPreference,
    /// Use at most this many bytes per storage binding even where the device allows more.
    /// Tests lower it to exercise the paging of large weights; `None` uses the device's limit.
    pub storage_binding_limit: Option<u64>,
    /// Use at most this many texels per side of a 2-D texture even where the device allows
    /// more. Tests lower it to exercise the line and page layout of texture-stored weights;
    /// `None` uses the device's `max_texture_dimension_2d`.
    pub texture_dimension_limit: Option<u32>,
    /// Whether to run the kernels chosen for CPU adapters (the sequential scans, texture
    /// weights under [`crate::WeightStorage::Auto`]): `None` decides from the adapter type
    /// (CPU adapters such as lavapipe, SwiftShader, WARP; an application's device handed to
    /// [`GpuContext::from_device`] counts as a GPU). `Some` forces it: an application that
    /// knows its device is a CPU says so, and tests run the GPU paths on a CPU adapter.
    pub cpu_paths: Option<bool>,
}

/// Features present on the device that kernels may choose faster variants from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceFeatures {
    /// `SHADER_F16`: native half-precision arithmetic in shaders.
    pub shader_f16: bool,
    /// `unpack2x16float` in shaders (wgpu's `DownlevelFlags::SHADER_F16_IN_F32`: Vulkan,
    /// Metal and DX12 have it). Known only when the library chose the adapter; false for a
    /// device the application handed us, so the integer widening runs there.
    pub f16_unpack: bool,
    /// `SUBGROUP`: subgroup operations in compute shaders.
    pub subgroup: bool,
    /// `TIMESTAMP_QUERY`: GPU timestamps for profiling, written at the start and end of passes.
    pub timestamp_query: bool,
    /// `TIMESTAMP_QUERY_INSIDE_ENCODERS`: timestamps between commands of an encoder (copies).
    pub timestamp_inside_encoders: bool,
    /// `TIMESTAMP_QUERY_INSIDE_PASSES`: timestamps between dispatches of one compute pass.
    pub timestamp_inside_passes: bool,
}

/// A compute pipeline and the bind group layout of its one bind group.
#[derive(Debug)]
pub struct KernelPipeline {
    /// The label (`mamba_wgpu.<op>`), also the pipeline cache key.
    pub label: String,
    /// The compiled pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// The layout of bind group 0.
    pub layout: wgpu::BindGroupLayout,
}

/// What one binding of a kernel's bind group holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// A uniform buffer (the params struct).
    Uniform,
    /// A read-only storage buffer.
    Storage,
    /// A read-write storage buffer.
    StorageRw,
    /// A 2-D rgba32float texture bound as a read-only storage texture
    /// (`texture_storage_2d<rgba32float, read>`, read with `textureLoad`).
    TextureFloat,
    /// A 2-D rgba32uint texture bound as a read-only storage texture
    /// (`texture_storage_2d<rgba32uint, read>`).
    TextureUint,
}

/// GPU timestamp slots `0..count` (spread over query sets of at most 4,096), resolved and read
/// back as nanoseconds. Slots `2i` and `2i + 1` always share a query set, so a pair can be a
/// pass's begin and end writes.
#[derive(Debug)]
pub struct TimestampQueries {
    sets: Vec<(wgpu::QuerySet, wgpu::Buffer, u32)>,
    readback: wgpu::Buffer,
    count: u32,
    period_ns: f64,
}

impl TimestampQueries {
    /// Slots.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The query set holding `slot` and the slot's index in it.
    pub fn slot(&self, slot: u32) -> (&wgpu::QuerySet, u32) {
        let per = wgpu::QUERY_SET_MAX_QUERIES;
        (&self.sets[(slot / per) as usize].0, slot % per)
    }

    /// Timestamp writes for a compute pass: its beginning into `begin`, its end into `begin + 1`
    /// (`begin` even, so both lie in one query set).
    pub fn pass_writes(&self, begin: u32) -> wgpu::ComputePassTimestampWrites<'_> {
        debug_assert!(begin.is_multiple_of(2) && begin + 1 < self.count);
        let (query_set, i) = self.slot(begin);
        wgpu::ComputePassTimestampWrites {
            query_set,
            beginning_of_pass_write_index: Some(i),
            end_of_pass_write_index: Some(i + 1),
        }
    }

    /// Records the resolve of every slot and the copy to the readback buffer; submit `enc`,
    /// then call [`TimestampQueries::read_ns`].
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let mut offset = 0;
        for (set, resolve, n) in &self.sets {
            enc.resolve_query_set(set, 0..*n, resolve, 0);
            let bytes = u64::from(*n) * wgpu::QUERY_SIZE as u64;
            enc.copy_buffer_to_buffer(resolve, 0, &self.readback, offset, bytes);
            offset += bytes;
        }
    }

    /// Waits for the submitted resolve and returns every slot in nanoseconds after the
    /// earliest one (the GPU's clock has no meaningful origin; differences are taken in integer
    /// ticks before scaling, so large counter values lose no precision).
    pub fn read_ns(&self, ctx: &GpuContext) -> Result<Vec<f64>> {
        let words: Vec<u32> = ctx.map_read(&self.readback, self.count as usize * 2)?;
        let ticks: Vec<u64> = words
            .chunks_exact(2)
            .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
            .collect();
        let t0 = ticks.iter().copied().min().unwrap_or(0);
        Ok(ticks
            .iter()
            .map(|&t| (t - t0) as f64 * self.period_ns)
            .collect())
    }
}

/// A wgpu device and queue with what mamba-wgpu learned about them.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: Option<wgpu::AdapterInfo>,
    features: DeviceFeatures,
    limits: wgpu::Limits,
    storage_binding_limit: u64,
    texture_dimension_limit: u32,
    cpu_paths: Option<bool>,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    pipelines: Mutex<HashMap<String, Arc<KernelPipeline>>>,
    /// The background poll thread's queue, started by the first async readback.
    poller: OnceLock<mpsc::Sender<PollJob>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter_name())
            .field("features", &self.features)
            .field("storage_binding_limit", &self.storage_binding_limit)
            .finish()
    }
}

impl GpuContext {
    /// Creates a device on the default adapter, blocking until it is ready.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(&ContextOptions::default()))
    }

    /// Creates a device on the default adapter with the given options, blocking.
    pub fn with_options(options: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Creates a device on the default adapter. Requests the optional features that are
    /// present (f16, subgroups, timestamps) and the adapter's own limits, which are at least
    /// the WebGPU defaults and usually much higher.
    pub async fn new_async(options: &ContextOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: options.power_preference,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::NoAdapter(e.to_string()))?;
        let wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let required_features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("mamba_wgpu"),
                required_features,
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice(e.to_string()))?;
        let mut ctx = Self::build(device, queue, Some(adapter.get_info()));
        ctx.features.f16_unpack = adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32);
        ctx.apply(options);
        Ok(ctx)
    }

    /// Wraps a device and queue the application already owns (for instance the ones its
    /// renderer uses). Features and limits are read from the device, not assumed.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Self::build(device, queue, None)
    }

    /// Like [`GpuContext::from_device`], with options (a lower storage binding limit).
    pub fn from_device_with_options(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &ContextOptions,
    ) -> Self {
        let mut ctx = Self::build(device, queue, None);
        ctx.apply(options);
        ctx
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: Option<wgpu::AdapterInfo>) -> Self {
        let f = device.features();
        let features = DeviceFeatures {
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            f16_unpack: false,
            subgroup: f.contains(wgpu::Features::SUBGROUP),
            timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_inside_encoders: f.contains(
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
            ),
            timestamp_inside_passes: f.contains(
                wgpu::Features::TIMESTAMP_QUERY
                    | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                    | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            ),
        };
        let limits = device.limits();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        {
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if let Ok(mut v) = errors.lock() {
                    v.push(e.to_string());
                }
            }));
        }
        {
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                if let Ok(mut l) = lost.lock() {
                    *l = Some(format!("{reason:?}: {msg}"));
                }
            });
        }
        let storage_binding_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let texture_dimension_limit = limits.max_texture_dimension_2d;
        Self {
            device,
            queue,
            info,
            features,
            limits,
            storage_binding_limit,
            texture_dimension_limit,
            cpu_paths: None,
            errors,
            lost,
            pipelines: Mutex::new(HashMap::new()),
            poller: OnceLock::new(),
        }
    }

    fn apply(&mut self, options: &ContextOptions) {
        if let Some(l) = options.storage_binding_limit {
            // Bindings are sized in whole f32 elements and 256-byte aligned offsets.
            self.storage_binding_limit = self.storage_binding_limit.min(l.max(256));
        }
        if let Some(t) = options.texture_dimension_limit {
            self.texture_dimension_limit = self.texture_dimension_limit.min(t.max(1));
        }
        if options.cpu_paths.is_some() {
            self.cpu_paths = options.cpu_paths;
        }
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Optional features present on the device.
    pub fn features(&self) -> DeviceFeatures {
        self.features
    }

    /// Nanoseconds per timestamp tick (0 where the device has no timestamp queries).
    pub fn timestamp_period_ns(&self) -> f64 {
        if self.features.timestamp_query {
            f64::from(self.queue.get_timestamp_period())
        } else {
            0.0
        }
    }

    /// A set of `count` GPU timestamp slots with the buffers to resolve and read them back.
    /// Fails with [`Error::MissingFeature`] where the device has no timestamp queries.
    pub fn timestamp_queries(&self, count: u32) -> Result<TimestampQueries> {
        if !self.features.timestamp_query {
            return Err(Error::MissingFeature("TIMESTAMP_QUERY"));
        }
        let count = count.max(1);
        let per = wgpu::QUERY_SET_MAX_QUERIES;
        let sets = (0..count.div_ceil(per))
            .map(|i| {
                let n = (count - i * per).min(per);
                let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("mamba_wgpu.timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: n,
                });
                let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("mamba_wgpu.timestamps.resolve"),
                    size: u64::from(n) * wgpu::QUERY_SIZE as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, resolve, n)
            })
            .collect();
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("mamba_wgpu.timestamps.readback"),
            size: u64::from(count) * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(TimestampQueries {
            sets,
            readback,
            count,
            period_ns: self.timestamp_period_ns(),
        })
    }

    /// The adapter's name, or "application device" when the application handed us its device.
    pub fn adapter_name(&self) -> String {
        match &self.info {
            Some(i) => format!("{} ({:?}, {})", i.name, i.backend, i.driver_info),
            None => "application device".to_string(),
        }
    }

    /// The largest storage binding, in bytes, this context will create.
    pub fn storage_binding_limit(&self) -> u64 {
        self.storage_binding_limit
    }

    /// The most texels per side of a 2-D texture this context will create.
    pub fn texture_dimension_limit(&self) -> u32 {
        self.texture_dimension_limit
    }

    /// Whether big weights should live in textures rather than storage buffers on this
    /// device: a rule from measurements, true on CPU adapters (Mesa's llvmpipe/lavapipe,
    /// SwiftShader), where the texture kernel (`linear_tex`, one 16-byte texel per load)
    /// outruns the storage-buffer matmul and GEMV several times over (mamba-130m f32 on
    /// lavapipe: 4.2 / 0.91 tok/s prefill / decode with buffers), false on GPUs and on devices the
    /// application handed us (their adapter type is unknown), which read storage buffers at
    /// full bandwidth.
    pub fn prefers_texture_weights(&self) -> bool {
        self.is_cpu_adapter()
    }

    /// Whether the device is a CPU adapter (Mesa's llvmpipe/lavapipe, SwiftShader, WARP): a
    /// few cores running workgroups in SIMD lanes, where barriers and storage-buffer gathers
    /// are expensive and lane-uniform loads cheap. Kernels with a sequential variant (the
    /// Mamba-1 scan, Mamba-2's SSD) pick it here. False for devices the application handed
    /// us, unless [`ContextOptions::cpu_paths`] says otherwise (it overrides either way).
    pub fn is_cpu_adapter(&self) -> bool {
        self.cpu_paths.unwrap_or_else(
            || matches!(&self.info, Some(i) if i.device_type == wgpu::DeviceType::Cpu),
        )
    }

    /// Fails with the first device error or device loss recorded since the last call.
    pub fn check(&self) -> Result<()> {
        if let Some(l) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::DeviceLost(l));
        }
        let mut errs = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error log poisoned".into()))?;
        if !errs.is_empty() {
            let msg = errs.join("; ");
            errs.clear();
            return Err(Error::Gpu(msg));
        }
        Ok(())
    }

    /// Blocks until all submitted work has finished, then reports device errors.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        self.check()
    }

    /// Blocks until the work of one submission (and everything submitted before it) has
    /// finished, then reports device errors. Work submitted later, such as an application's
    /// own frames on a shared queue, is not waited for.
    pub fn wait_for(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: None,
        });
        if let Err(e) = waited {
            // A submission refused by a lost device has an index wgpu cannot wait for; one
            // plain poll runs the device-lost callback, so the loss is what gets reported.
            let _ = self.device.poll(wgpu::PollType::Poll);
            self.check()?;
            return Err(Error::Gpu(e.to_string()));
        }
        self.check()
    }

    /// Submits command buffers and returns the submission's index (for
    /// [`GpuContext::wait_for`] and the readbacks).
    pub fn submit(
        &self,
        commands: impl IntoIterator<Item = wgpu::CommandBuffer>,
    ) -> wgpu::SubmissionIndex {
        self.queue.submit(commands)
    }

    /// Hands a submission to the background poll thread (started on first use), which waits
    /// for it off the caller's thread and then settles `slot` with the poll's outcome. The
    /// map callback itself may run there or on any other thread polling the device.
    fn poll_in_background(&self, submission: wgpu::SubmissionIndex, slot: Arc<Slot>) -> Result<()> {
        let tx = self.poller.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<PollJob>();
            let device = self.device.clone();
            // The thread owns a handle to the device and ends when the context (the only
            // sender) is dropped; a poll error (device lost) settles the slot with it.
            let spawned = std::thread::Builder::new()
                .name("mamba_wgpu.poll".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let r = device
                            .poll(wgpu::PollType::Wait {
                                submission_index: Some(job.submission),
                                timeout: None,
                            })
                            .map(|_| ())
                            .map_err(|e| {
                                // As in `wait_for`: let a device loss reach its callback.
                                let _ = device.poll(wgpu::PollType::Poll);
                                e.to_string()
                            });
                        job.slot.settle_polled(r);
                    }
                });
            if spawned.is_err() {
                // A sender whose receiver is gone: every send below fails with an error.
                let (tx, _) = mpsc::channel();
                return tx;
            }
            tx
        });
        tx.send(PollJob {
            submission,
            slot: slot.clone(),
        })
        .map_err(|_| Error::Gpu("could not start the device poll thread".into()))
    }

    /// The async twin of [`GpuContext::map_read`]: maps `staging` (filled by `submission`) and
    /// copies out its first `len` elements, without blocking the caller's thread. A background
    /// thread owned by this context polls the device; the returned future is woken when the
    /// map completes, so any executor (or `pollster::block_on`) can drive it. Dropping the
    /// future before it resolves cancels the map and leaves `staging` usable.
    pub fn map_read_async<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        submission: wgpu::SubmissionIndex,
    ) -> Readback<'_, T> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let slot = Arc::new(Slot::default());
        let started = if bytes == 0 {
            Ok(())
        } else {
            let s = slot.clone();
            staging
                .slice(0..bytes)
                .map_async(wgpu::MapMode::Read, move |r| s.settle_mapped(r.is_ok()));
            self.poll_in_background(submission, slot.clone())
        };
        Readback {
            ctx: self,
            staging: staging.clone(),
            len,
            slot,
            started: Some(started),
            done: bytes == 0,
            _t: std::marker::PhantomData,
        }
    }

    /// The pipeline for `label`, compiled from `source` on first use and cached for the
    /// device's lifetime. `bindings` lists bind group 0 in binding order.
    pub fn pipeline(
        &self,
        label: &str,
        source: &str,
        bindings: &[BindingKind],
    ) -> Result<Arc<KernelPipeline>> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Gpu("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(label) {
            return Ok(p.clone());
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .enumerate()
            .map(|(i, k)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match k {
                    BindingKind::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    BindingKind::Storage | BindingKind::StorageRw => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *k == BindingKind::Storage,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    // Read-only storage textures rather than sampled ones: lavapipe reads them
                    // through its image path, without the per-lane mip-level lookups of its
                    // sampler path (mamba-130m f16's decode GEMVs: 32-37 instead of 48-51 ms
                    // per token), and both rgba32 formats support read-only storage access on
                    // every device with storage textures.
                    BindingKind::TextureFloat | BindingKind::TextureUint => {
                        wgpu::BindingType::StorageTexture {
                            access: wgpu::StorageTextureAccess::ReadOnly,
                            format: if *k == BindingKind::TextureFloat {
                                wgpu::TextureFormat::Rgba32Float
                            } else {
                                wgpu::TextureFormat::Rgba32Uint
                            },
                            view_dimension: wgpu::TextureViewDimension::D2,
                        }
                    }
                },
                count: None,
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(label),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("building pipeline {label}: {e}")));
        }
        let p = Arc::new(KernelPipeline {
            label: label.to_string(),
            pipeline,
            layout,
        });
        cache.insert(label.to_string(), p.clone());
        Ok(p)
    }

    /// Checks that a storage binding of `bytes` fits the device.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.storage_binding_limit {
            return Err(Error::LimitExceeded {
                what: format!("storage binding for {what}"),
                needed: bytes,
                limit: self.storage_binding_limit,
            });
        }
        Ok(())
    }

    /// A 2-D texture of `width` × `height` texels of `format` that kernels bind as a
    /// read-only storage texture and that is filled by writes or copies.
    pub fn storage_texture(
        &self,
        label: &str,
        format: wgpu::TextureFormat,
        width: u32,
        height: u32,
    ) -> wgpu::Texture {
        self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        })
    }

    /// A zero-filled storage buffer of `len` f32/u32 elements (at least one element: zero-sized
    /// bindings are invalid), checked against the binding limit.
    pub fn storage_buffer(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let bytes = (len.max(1) * 4) as u64;
        self.check_binding(label, bytes)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data` (4-byte elements), checked against the binding limit.
    pub fn storage_buffer_init<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<wgpu::Buffer> {
        debug_assert_eq!(std::mem::size_of::<T>(), 4);
        let buf = self.storage_buffer(label, data.len())?;
        if !data.is_empty() {
            self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(data));
        }
        Ok(buf)
    }

    /// A uniform buffer holding one params struct.
    pub fn uniform_buffer<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        let size = (std::mem::size_of::<T>() as u64)
            .max(16)
            .next_multiple_of(16);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytemuck::bytes_of(params));
        buf
    }

    /// Copies `len` 4-byte elements starting at element `offset` of `buffer` back to the CPU,
    /// waiting for all submitted work first.
    pub fn read_buffer<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        debug_assert_eq!(std::mem::size_of::<T>(), 4);
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = (len * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("mamba_wgpu.readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, (offset * 4) as u64, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.map_read(&staging, len)
    }

    /// Maps a MAP_READ buffer (after the work that fills it was submitted) and copies out
    /// its first `len` elements, waiting for all submitted work.
    pub fn map_read<T: bytemuck::Pod>(&self, staging: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
        self.map_read_inner(staging, len, None)
    }

    /// [`GpuContext::map_read`] that waits only for `submission` (the one that fills
    /// `staging`), not for work submitted after it.
    pub fn map_read_after<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        submission: wgpu::SubmissionIndex,
    ) -> Result<Vec<T>> {
        self.map_read_inner(staging, len, Some(submission))
    }

    fn map_read_inner<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        len: usize,
        submission: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let slice = staging.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        match submission {
            Some(i) => self.wait_for(i)?,
            None => self.wait()?,
        }
        rx.recv()
            .map_err(|_| Error::Gpu("buffer map callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(e.to_string()))?;
            bytemuck::cast_slice::<u8, T>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}

/// A submission for the background poll thread and the slot it settles.
struct PollJob {
    submission: wgpu::SubmissionIndex,
    slot: Arc<Slot>,
}

/// Where a buffer-map callback and the background poll meet the future that waits for them.
#[derive(Default)]
struct Slot(Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    /// The map callback's outcome (true: mapped).
    mapped: Option<bool>,
    /// The background poll's outcome, once it has returned.
    polled: Option<std::result::Result<(), String>>,
    waker: Option<Waker>,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut SlotState)) {
        let waker = match self.0.lock() {
            Ok(mut st) => {
                f(&mut st);
                st.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn settle_mapped(&self, ok: bool) {
        self.update(|st| st.mapped = Some(ok));
    }

    fn settle_polled(&self, r: std::result::Result<(), String>) {
        self.update(|st| st.polled = Some(r));
    }
}

/// The future of [`GpuContext::map_read_async`]: the first `len` elements of a readback
/// buffer once the GPU work that fills it has finished.
#[must_use = "a readback does nothing unless awaited"]
pub struct Readback<'a, T> {
    ctx: &'a GpuContext,
    staging: wgpu::Buffer,
    len: usize,
    slot: Arc<Slot>,
    /// Whether handing the submission to the poll thread worked (taken on first poll).
    started: Option<Result<()>>,
    /// Resolved (or nothing to map): nothing to cancel on drop.
    done: bool,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Readback<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readback")
            .field("len", &self.len)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: bytemuck::Pod> Future for Readback<'_, T> {
    type Output = Result<Vec<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Readback holds no self-references, so it is Unpin and may be moved out of the pin.
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Ok(Vec::new()));
        }
        if let Some(Err(e)) = this.started.take() {
            this.finish();
            return Poll::Ready(Err(e));
        }
        let outcome = {
            let Ok(mut st) = this.slot.0.lock() else {
                this.finish();
                return Poll::Ready(Err(Error::Gpu("readback state poisoned".into())));
            };
            match (st.mapped, &st.polled) {
                (Some(true), _) => Ok(()),
                (Some(false), _) => Err(Error::Gpu("mapping a readback buffer failed".into())),
                (None, Some(Err(e))) => Err(Error::Gpu(e.clone())),
                // Not mapped yet. A poll that returned Ok has seen the submission finish, but
                // the map callback may be running on another thread that polled the same
                // device (wgpu runs each callback on whichever thread's poll collected it),
                // so wait for it: it always comes, with an error if the map was refused or
                // the buffer dropped. The waker is stored under the lock the callback takes.
                (None, _) => {
                    st.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        let out = outcome.and_then(|_| this.copy_out());
        this.finish();
        Poll::Ready(out.and_then(|v| this.ctx.check().map(|_| v)))
    }
}

impl<T: bytemuck::Pod> Readback<'_, T> {
    fn copy_out(&self) -> Result<Vec<T>> {
        let bytes = (self.len * std::mem::size_of::<T>()) as u64;
        let slice = self.staging.slice(0..bytes);
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(e.to_string()))?;
        Ok(bytemuck::cast_slice::<u8, T>(&view).to_vec())
    }
}

impl<T> Readback<'_, T> {
    /// Unmaps the buffer (also cancelling a map still pending) so it can be written again.
    /// A map that failed left the buffer unmapped, and unmapping it again would be a device
    /// error, so it is skipped. The slot's lock is not held across `unmap`: cancelling a
    /// pending map runs its callback, which takes that lock.
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            let failed = matches!(self.slot.0.lock().map(|st| st.mapped), Ok(Some(false)));
            if !failed {
                self.staging.unmap();
            }
        }
    }
}

impl<T> Drop for Readback<'_, T> {
    fn drop(&mut self) {
        self.finish();
    }
}
