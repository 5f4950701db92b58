//! Tests of the embedding kernels (to be written).
