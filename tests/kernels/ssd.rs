//! Tests of the SSD prefill kernels (to be written).
