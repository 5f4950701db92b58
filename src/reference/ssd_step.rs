//! CPU twin of `shaders/ssd_state_update.wgsl` (to be written).
