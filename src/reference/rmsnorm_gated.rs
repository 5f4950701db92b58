//! CPU twin of `shaders/rmsnorm_gated.wgsl` (to be written).
