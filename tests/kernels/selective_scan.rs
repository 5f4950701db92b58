//! Tests of the selective_scan kernels (to be written).
