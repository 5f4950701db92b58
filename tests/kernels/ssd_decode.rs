//! Tests of the SSD decode kernel and the gated RMSNorm (to be written).
