//! CPU twin of `shaders/conv1d.wgsl` (to be written).
