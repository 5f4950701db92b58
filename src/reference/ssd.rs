//! CPU twins of the Mamba-2 SSD kernels (to be written).
