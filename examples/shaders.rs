//! Writes every shader variant the crate builds to a folder, one `.wgsl` file each, so any
//! WGSL tool (naga, Tint, an editor) can check exactly what runs.
//!
//! ```text
//! cargo run --example shaders -- --out DIR
//! ```

use std::path::PathBuf;

use clap::Parser;
use mamba_wgpu::kernels::all_shaders;

#[derive(Parser)]
struct Args {
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    for s in all_shaders() {
        let name = s.label.strip_prefix("mamba_wgpu.").unwrap_or(s.label);
        let path = args.out.join(format!("{name}.wgsl"));
        std::fs::write(&path, s.source)?;
        println!("{}", path.display());
    }
    Ok(())
}
