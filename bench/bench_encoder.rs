//! Times the encoder forward alone, for `make bench` (bench/run.sh).
//!
//!     bench_encoder WEIGHTS BATCH.safetensors OUT.safetensors REPEATS [POS_INTERP]
//!
//! Opens WEIGHTS (any layout dinomaly-extract reads) with the default target
//! layers of its size, reads the pre-made, already normalised image batch
//! stored as tensor `images` (B, 3, H, W) in BATCH.safetensors, runs one
//! untimed warm-up forward and then REPEATS timed forwards (blocks 0 up to
//! the last target layer, exactly what dinomaly-extract runs per batch, so
//! no decoding or resizing is included). Prints one JSON line on stdout:
//! threads, batch, per-forward wall and CPU seconds (CPU: user + system time
//! of the whole process, all threads, which a shared machine inflates less
//! than wall time). Writes the target-layer outputs of the last forward to
//! OUT.safetensors (`layer.{i}`, (B, tokens, D)) so the caller can compare
//! them with timm.
//! POS_INTERP: official, exact (default; timm's dynamic size as anomalib
//! uses it) or exact-antialias.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use dinomaly::backbone::open::{open_encoder, EncoderRequest};
use dinomaly::backbone::pos_embed::PosInterp;
use tch::{Device, Tensor};

fn main() -> anyhow::Result<()> {
    // The process settings every binary of the suite makes (cli::exit),
    // before any other tch call.
    dinomaly::alloc::reuse_large_buffers();
    let _ = dinomaly::mkl_kernels::intel_kernels_allowed();
    dinomaly::device::preload_cuda();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        bail!("usage: bench_encoder WEIGHTS BATCH.safetensors OUT.safetensors REPEATS [POS_INTERP]");
    }
    let repeats: usize = args[4].parse().context("REPEATS must be a count")?;
    let pos_interp = match args.get(5) {
        Some(s) => PosInterp::parse(s).with_context(|| format!("unknown pos-embed mode '{s}'"))?,
        None => PosInterp::Exact,
    };
    let opened = open_encoder(
        &EncoderRequest {
            backbone: "bench".into(),
            weights: Some(PathBuf::from(&args[1])),
            weights_sha256: None,
            layers: Vec::new(),
            pos_interp,
            quiet: true,
            tool: "bench_encoder".into(),
        },
        Device::Cpu,
    )?;
    let encoder = opened.encoder;
    let images = Tensor::read_safetensors(&args[2])?
        .into_iter()
        .find_map(|(k, t)| (k == "images").then_some(t))
        .with_context(|| format!("{}: no tensor 'images'", args[2]))?;
    let batch = images.size()[0];
    let _guard = tch::no_grad_guard();
    let _ = encoder.layer_outputs(&images)?;
    let mut times = Vec::with_capacity(repeats);
    let mut cpu = Vec::with_capacity(repeats);
    let mut outputs = Vec::new();
    for _ in 0..repeats {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        outputs = encoder.layer_outputs(&images)?;
        times.push(t0.elapsed().as_secs_f64());
        cpu.push(cpu_seconds() - c0);
    }
    let named: Vec<(String, Tensor)> =
        encoder.layers().iter().zip(outputs).map(|(i, t)| (format!("layer.{i}"), t)).collect();
    Tensor::write_safetensors(&named, &args[3])?;
    println!(
        "{}",
        serde_json::json!({
            "threads": tch::get_num_threads(),
            "batch": batch,
            "layers": encoder.layers(),
            "seconds": times,
            "cpu_seconds": cpu,
        })
    );
    Ok(())
}

/// User + system CPU time of this process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
