//! CPU twin of `shaders/selective_scan.wgsl` (to be written).
