//! Every shader the crate builds is parsed and validated by naga with the capabilities the
//! runtime really requests (core WGSL, plus unpack2x16float for the variants that call it), its `Params` struct
//! checked against the Rust struct, its bindings against the Rust layout, its workgroup size
//! and workgroup memory against WebGPU's default limits, and then translated to SPIR-V, MSL
//! and HLSL: proof that it builds for Vulkan, Metal and DX12 without those GPUs.

use mamba_wgpu::context::BindingKind;
use mamba_wgpu::kernels::{all_shaders, ShaderInfo};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// WebGPU's default limits: the portable floor every kernel must fit.
const MAX_INVOCATIONS: u32 = 256;
const MAX_WORKGROUP_BYTES: u32 = 16_384;

fn check(info: &ShaderInfo) {
    let label = info.label;
    let module = naga::front::wgsl::parse_str(info.source)
        .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(info.source)));
    // The runtime builds the variants that call unpack2x16float only where the device has it
    // (wgpu's SHADER_F16_IN_F32 downlevel flag, which naga calls SHADER_FLOAT16_IN_FLOAT32);
    // everything else must be core WGSL with no capability at all.
    // The variants that call subgroup operations are built only where the device has wgpu's
    // SUBGROUP feature, which requests naga's SUBGROUP capability for compute shaders.
    let mut caps = Capabilities::empty();
    if info.source.contains("unpack2x16float") {
        caps |= Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    }
    let subgroup =
        info.source.contains("subgroupBroadcast(") || info.source.contains("subgroupShuffle(");
    if subgroup {
        caps |= Capabilities::SUBGROUP;
    }
    let mut validator = Validator::new(ValidationFlags::all(), caps);
    if subgroup {
        validator
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
    }
    let mod_info = validator
        .validate(&module)
        .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(info.source)));

    // Entry point and workgroup geometry.
    let ep = module
        .entry_points
        .iter()
        .find(|e| e.name == "main")
        .unwrap_or_else(|| panic!("{label}: no `main` entry point"));
    assert_eq!(ep.stage, naga::ShaderStage::Compute, "{label}");
    let invocations: u32 = ep.workgroup_size.iter().product();
    assert!(
        invocations <= MAX_INVOCATIONS,
        "{label}: {invocations} invocations per workgroup"
    );

    // Bindings: group 0, binding i of the kind the Rust layout declares; params at binding 0.
    let mut seen = vec![false; info.bindings.len()];
    let mut wg_bytes = 0;
    for (_, var) in module.global_variables.iter() {
        let size = module.types[var.ty].inner.size(module.to_ctx());
        if var.space == naga::AddressSpace::WorkGroup {
            wg_bytes += size;
        }
        let Some(rb) = &var.binding else { continue };
        assert_eq!(rb.group, 0, "{label}: only bind group 0 is used");
        let i = rb.binding as usize;
        assert!(
            i < info.bindings.len(),
            "{label}: binding {i} is not in the Rust layout"
        );
        seen[i] = true;
        let kind = match var.space {
            naga::AddressSpace::Uniform => BindingKind::Uniform,
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                BindingKind::StorageRw
            }
            naga::AddressSpace::Storage { .. } => BindingKind::Storage,
            naga::AddressSpace::Handle => match module.types[var.ty].inner {
                // Weight textures are read-only storage textures of the two rgba32 formats.
                naga::TypeInner::Image {
                    dim: naga::ImageDimension::D2,
                    arrayed: false,
                    class: naga::ImageClass::Storage { format, access },
                } if access == naga::StorageAccess::LOAD => match format {
                    naga::StorageFormat::Rgba32Float => BindingKind::TextureFloat,
                    naga::StorageFormat::Rgba32Uint => BindingKind::TextureUint,
                    other => panic!("{label}: binding {i}: storage texture of {other:?}"),
                },
                ref other => panic!("{label}: binding {i}: handle {other:?}"),
            },
            other => panic!("{label}: binding {i} in address space {other:?}"),
        };
        assert_eq!(kind, info.bindings[i], "{label}: binding {i}");
        if i == 0 {
            assert_eq!(
                size as usize, info.params_size,
                "{label}: WGSL Params is {size} bytes, the Rust struct {}",
                info.params_size
            );
            assert_eq!(
                size % 16,
                0,
                "{label}: Params should be a multiple of 16 bytes"
            );
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "{label}: bindings declared in Rust but absent in WGSL: {seen:?}"
    );
    assert!(
        wg_bytes <= MAX_WORKGROUP_BYTES,
        "{label}: {wg_bytes} bytes of workgroup memory"
    );
    let storage = info
        .bindings
        .iter()
        .filter(|b| matches!(b, BindingKind::Storage | BindingKind::StorageRw))
        .count();
    assert!(
        storage <= 8,
        "{label}: {storage} storage buffers (WebGPU's default limit is 8)"
    );

    // Back ends.
    naga::back::spv::write_vec(
        &module,
        &mod_info,
        &naga::back::spv::Options::default(),
        None,
    )
    .unwrap_or_else(|e| panic!("{label}: SPIR-V: {e}"));
    let msl_pipeline = naga::back::msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
        ..Default::default()
    };
    naga::back::msl::write_string(
        &module,
        &mod_info,
        &naga::back::msl::Options::default(),
        &msl_pipeline,
    )
    .unwrap_or_else(|e| panic!("{label}: MSL: {e}"));
    let hlsl_options = naga::back::hlsl::Options::default();
    let hlsl_pipeline = naga::back::hlsl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
    };
    let mut out = String::new();
    naga::back::hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(&module, &mod_info, None)
        .unwrap_or_else(|e| panic!("{label}: HLSL: {e}"));
}

#[test]
fn every_shader_validates_and_translates() {
    let shaders = all_shaders();
    assert!(shaders.len() >= 9);
    for info in &shaders {
        check(info);
    }
}

#[test]
fn labels_are_unique_and_named_after_their_files() {
    let shaders = all_shaders();
    let mut labels: Vec<_> = shaders.iter().map(|s| s.label).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), shaders.len());
    for s in &shaders {
        let stem = s.label.strip_prefix("mamba_wgpu.").expect("label prefix");
        assert!(
            s.source.contains(&format!("mamba_wgpu.{stem}")),
            "{stem}.wgsl's header names its label"
        );
    }
}
