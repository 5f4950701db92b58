//! rmsnorm against `reference::rmsnorm`.

use mamba_wgpu::kernels::rmsnorm::{RmsNorm, RmsNormBuffers, RmsNormParams};
use mamba_wgpu::kernels::run;
use mamba_wgpu::reference;

use crate::common::*;

fn check(rows: usize, cols: usize, add: bool, narrow: bool) {
    let ctx = ctx();
    let res = rand_vec(1 + rows as u64, rows * cols, -2.0, 2.0);
    let delta = rand_vec(2 + cols as u64, rows * cols, -1.0, 1.0);
    let weight = rand_vec(3, cols, 0.5, 1.5);
    let eps = 1e-5;
    let mut want_res = res.clone();
    let want = reference::rmsnorm(&mut want_res, add.then_some(&delta[..]), &weight, cols, eps);

    let (res_b, delta_b, w_b, out_b) = (
        upload(&res),
        upload(&delta),
        upload(&weight),
        zeros(rows * cols),
    );
    let params = RmsNormParams {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        add: add as u32,
    };
    let k = RmsNorm::variant(ctx, narrow).unwrap();
    let d = k.bind(
        ctx,
        &params,
        RmsNormBuffers {
            residual: &res_b,
            delta: &delta_b,
            weight: &w_b,
            out: &out_b,
        },
    );
    run(ctx, &[&d]).unwrap();
    // f32 sums of `cols` squares in a different order: relative error ~ cols·eps_f32.
    let rtol = 1e-5 * (cols as f32).sqrt().max(1.0);
    assert_close(
        &format!("rmsnorm out ({rows}, {cols}) add {add} narrow {narrow}"),
        &read::<f32>(&out_b, rows * cols),
        &want,
        1e-6,
        rtol,
    );
    assert_close(
        &format!("rmsnorm residual ({rows}, {cols}) add {add} narrow {narrow}"),
        &read::<f32>(&res_b, rows * cols),
        &want_res,
        0.0,
        0.0,
    );
}

#[test]
fn rmsnorm_matches_reference_on_awkward_shapes() {
    for &(rows, cols) in &[
        (1, 1),
        (1, 7),
        (3, 36),
        (5, 255),
        (2, 256),
        (4, 257),
        (37, 768),
        (2, 1000),
    ] {
        // Both workgroup sizes (256 for GPUs, 8 for CPU adapters).
        for narrow in [false, true] {
            check(rows, cols, false, narrow);
            check(rows, cols, true, narrow);
        }
    }
}
