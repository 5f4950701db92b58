//! Tests of the matmul kernels (to be written).
