//! Tests of the sample kernels (to be written).
