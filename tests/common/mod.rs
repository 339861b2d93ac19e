//! Shared helpers of the model tests: a tiny search space and random batches.
#![allow(dead_code)]

use automoe::model::{Batch, DecoderLayerConfig, EncoderLayerConfig, SearchSpace, SubnetConfig};
use automoe::rng::seeded;
use rand::Rng;

/// A search space small enough for finite differences, with every gene free.
pub fn tiny_space() -> SearchSpace {
    SearchSpace::from_toml_str(
        r#"
        name = "tiny"
        encoder_embed_dim = [16, 12]
        decoder_embed_dim = [16, 12]
        qkv_dim = 8
        encoder_layers = [2, 3]
        decoder_layers = [1, 2]
        encoder_heads = [4, 2]
        decoder_self_heads = [4, 2]
        decoder_cross_heads = [4, 2]
        cross_attention_span = [-1, 1, 2]
        ffn_widths = [24, 16]
        max_experts = 3
        route_k = [1, 2]
        "#,
    )
    .unwrap()
}

pub const VOCAB: usize = 23;
pub const PAD: u32 = 1;

/// A dense (1 expert per layer) subnet of the tiny space, smaller than the max in every gene.
pub fn dense_config() -> SubnetConfig {
    SubnetConfig {
        encoder_embed_dim: 12,
        decoder_embed_dim: 16,
        qkv_dim: 8,
        route_k: 1,
        encoder: vec![
            EncoderLayerConfig { self_heads: 2, experts: 1, expert_widths: vec![16] },
            EncoderLayerConfig { self_heads: 4, experts: 1, expert_widths: vec![24] },
        ],
        decoder: vec![DecoderLayerConfig { self_heads: 4, cross_heads: 2, cross_span: 1, experts: 1, expert_widths: vec![16] }],
    }
}

/// An MoE subnet with heterogeneous experts and mixed spans.
pub fn moe_config() -> SubnetConfig {
    SubnetConfig {
        encoder_embed_dim: 16,
        decoder_embed_dim: 12,
        qkv_dim: 8,
        route_k: 1,
        encoder: vec![
            EncoderLayerConfig { self_heads: 2, experts: 3, expert_widths: vec![16, 24, 16] },
            EncoderLayerConfig { self_heads: 4, experts: 1, expert_widths: vec![24] },
            EncoderLayerConfig { self_heads: 4, experts: 2, expert_widths: vec![24, 16] },
        ],
        decoder: vec![
            DecoderLayerConfig { self_heads: 2, cross_heads: 4, cross_span: 2, experts: 2, expert_widths: vec![16, 24] },
            DecoderLayerConfig { self_heads: 4, cross_heads: 2, cross_span: -1, experts: 3, expert_widths: vec![24, 24, 16] },
        ],
    }
}

/// Random sentences (ids in 2..VOCAB) of the given lengths, right-padded with PAD.
pub fn batch(src_lens: &[usize], tgt_lens: &[usize], seed: u64) -> Batch {
    let mut rng = seeded(seed);
    let mut sent = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(2..VOCAB as u32)).collect() };
    let src: Vec<Vec<u32>> = src_lens.iter().map(|&n| sent(n)).collect();
    let tgt: Vec<Vec<u32>> = tgt_lens.iter().map(|&n| sent(n)).collect();
    Batch::from_sentences(&src, &tgt, PAD).unwrap()
}

/// `max |a - b| / max(max |b|, 1e-12)`; NaN anywhere is infinite (`f64::max` would skip it).
pub fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| if x.is_nan() || y.is_nan() { f64::INFINITY } else { m.max((x - y).abs()) }) / scale
}

/// Every CUDA backend present: the emulator always, `cuda:0` when a device (with NVRTC) exists.
/// Cross-backend tests run their body once per entry, against the CPU. A missing `cuda:0` is said
/// on stderr; with `AUTOMOE_REQUIRE_CUDA=1` (the device check, scripts/gpu-bundle-run.sh) it is a
/// failure, so a device run cannot pass on the emulator alone.
pub fn cuda_backends() -> Vec<automoe::Device> {
    let mut v = vec![automoe::Device::Emu];
    match automoe::cuda::Gpu::of(automoe::Device::Cuda(0)) {
        Ok(_) => v.push(automoe::Device::Cuda(0)),
        Err(e) => automoe::cuda::skip_unless_required("AUTOMOE_REQUIRE_CUDA", &format!("cuda: {e}")),
    }
    v
}

/// `max |a - b| / max(max |b|, 1e-6)` (DESIGN.md's error measure); NaN anywhere is infinite.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| if x.is_nan() || y.is_nan() { f64::INFINITY } else { m.max((x - y).abs()) }) / scale
}

/// Runs `cmd` with `input` on its stdin and returns what it did, success or not.
pub fn output_with_input(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `cmd` with `input` on its stdin; returns its stdout after checking that it succeeded (the
/// failure message names the command and carries its stderr).
pub fn stdout_with_input(cmd: &mut std::process::Command, input: &str) -> String {
    let out = output_with_input(cmd, input);
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
