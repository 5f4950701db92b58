//! Tests of the conv1d kernels (to be written).
