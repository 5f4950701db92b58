//! CPU twin of `shaders/sample.wgsl` (to be written).
