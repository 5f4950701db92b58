//! CPU twin of `shaders/matmul.wgsl` (to be written).
