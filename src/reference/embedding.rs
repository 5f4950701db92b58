//! CPU twin of `shaders/embedding.wgsl` (to be written).
