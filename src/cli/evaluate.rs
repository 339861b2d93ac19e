//! `automoe evaluate`: translate a test set with a saved model and score it with BLEU and chrF
//! (sacreBLEU 2.6.0-compatible, with sacreBLEU's signatures), e.g. Multi30k's test_2016_flickr
//! with AutoMoE's setting (beam 4, length penalty 0.6: the defaults).
//!
//! It also reports what the model costs under the routing its routers chose on this test set
//! (teacher-forced on the references): the paper's GFLOPs and active parameters assume every
//! expert of a layer gets the same share of tokens, which a heterogeneous MoE's router need not
//! do (it may prefer the wide experts or the narrow ones).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::translate::{encode_source, load_model_dir, translate_lines, write_output, DecodeArgs};
use crate::data::{make_batches, read_lines, TokenizedPair, Tokenizer};
use crate::decode::bleu::{corpus_bleu, BleuScore};
use crate::decode::chrf::{corpus_chrf, ChrfScore};
use crate::decode::MAX_POSITIONS;
use crate::fsio::{check_distinct_outputs, check_output_file, write_atomic};
use crate::model::{flop_report, param_report, PassRouting, Routing, SubnetConfig, SubnetModel, PAPER_SRC_LEN, PAPER_TGT_LEN};
use crate::train::mt::data::model_batch;
use crate::{Error, Result};

/// Padded tokens per teacher-forced batch when measuring the routing (the logits of one batch,
/// `[tokens, vocab]`, are its largest tensor).
const ROUTING_BATCH_TOKENS: usize = 2048;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory: model.safetensors, model.json and tokenizer.json.
    pub model: PathBuf,
    /// Source sentences, one per line.
    #[arg(long)]
    pub src: PathBuf,
    /// Reference translations, line-aligned with --src.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Also write the translations here (atomically).
    #[arg(long)]
    pub hyp_out: Option<PathBuf>,
    /// Also write the scores, signatures, decoding settings and routed cost here as one JSON
    /// object (atomically), for scripts comparing many models.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// The scores of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub bleu: BleuScore,
    pub chrf: ChrfScore,
    pub hypotheses: Vec<String>,
    pub sentences: usize,
    pub seconds: f64,
    /// The cost under the routing measured on this test set; `None` when no line pair has both
    /// sides non-empty.
    pub routed: Option<RoutedCost>,
    /// The evaluated model's architecture.
    pub config: SubnetConfig,
}

/// A model's cost in the paper's units (30-token source and target, no output projection;
/// parameters without the embedding), under uniform routing and under a measured one.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedCost {
    /// What every FFN layer's router did over the test set, teacher-forced: tokens in, (token,
    /// slot) pairs per expert.
    pub counts: PassRouting,
    /// The expert shares `counts` gives.
    pub routing: Routing,
    pub gflops: f64,
    pub active_params: f64,
    /// What the search constrains: every expert of a layer gets the same share.
    pub uniform_gflops: f64,
    pub uniform_active_params: f64,
}

impl RoutedCost {
    /// Measures the routing of `model` on the pairs of `src` and `refs` with both sides non-empty
    /// (each side truncated to the decoder's position limit, as `--truncate` does) and prices it.
    pub fn measure(model: &SubnetModel, tok: &Tokenizer, src: &[String], refs: &[String]) -> Result<Option<Self>> {
        // Truncating, `encode_source` never reports a line as too long.
        let encode = |line: &str| -> Result<Vec<u32>> {
            encode_source(tok, line, MAX_POSITIONS, true)?
                .map_err(|n| Error::invalid("evaluate", format!("a line of {n} tokens was not truncated")))
        };
        let mut pairs = Vec::with_capacity(src.len());
        for (s, r) in src.iter().zip(refs) {
            let (s, t) = (encode(s)?, encode(r)?);
            if !s.is_empty() && !t.is_empty() {
                pairs.push(TokenizedPair { src: s, tgt: t });
            }
        }
        if pairs.is_empty() {
            return Ok(None);
        }
        let batches = make_batches(&pairs, ROUTING_BATCH_TOKENS, None)?.iter().map(model_batch).collect::<Result<Vec<_>>>()?;
        let counts = model.measure_routing(&batches)?;
        Self::price(&model.config, model.vocab, model.options.pre_norm, counts).map(Some)
    }

    /// The costs of `cfg` under the routing `counts` measured and under uniform routing.
    pub fn price(cfg: &SubnetConfig, vocab: usize, pre_norm: bool, counts: PassRouting) -> Result<Self> {
        let routing = Routing::measured(&counts);
        let gflops = |r: &Routing| flop_report(cfg, vocab, PAPER_SRC_LEN, PAPER_TGT_LEN, r).map(|f| f.paper_gflops());
        let active = |r: &Routing| param_report(cfg, vocab, pre_norm, r).map(|p| p.active_without_embedding());
        Ok(RoutedCost {
            gflops: gflops(&routing)?,
            active_params: active(&routing)?,
            uniform_gflops: gflops(&Routing::Uniform)?,
            uniform_active_params: active(&Routing::Uniform)?,
            routing,
            counts,
        })
    }

    /// Every FFN layer of `cfg` (encoder, then decoder) with its experts' widths and measured
    /// shares; empty when `routing` is not a measured one.
    pub fn layer_shares<'c>(&self, cfg: &'c SubnetConfig) -> Vec<LayerShares<'c>> {
        let Routing::Measured { encoder, decoder } = &self.routing else { return Vec::new() };
        let enc = cfg.encoder.iter().map(|l| &l.expert_widths[..l.experts]).zip(encoder).map(|w| ("encoder", w));
        let dec = cfg.decoder.iter().map(|l| &l.expert_widths[..l.experts]).zip(decoder).map(|w| ("decoder", w));
        let mut layer = [0, 0];
        enc.chain(dec)
            .map(|(side, (widths, shares))| {
                let n = &mut layer[usize::from(side == "decoder")];
                *n += 1;
                LayerShares { side, layer: *n, widths, shares: shares.clone() }
            })
            .collect()
    }

    /// The largest share one expert got in any MoE layer of `cfg`; `None` without MoE layers.
    pub fn max_expert_share(&self, cfg: &SubnetConfig) -> Option<f64> {
        self.layer_shares(cfg).iter().filter(|l| l.widths.len() > 1).flat_map(|l| l.shares.iter().copied()).reduce(f64::max)
    }

    /// One line per MoE layer: each expert's width and its share of (token, slot) pairs, e.g.
    /// `encoder layer 2: 3072 × 0.41, 2048 × 0.33, 1024 × 0.26`. Dense layers are left out.
    pub fn share_lines(&self, cfg: &SubnetConfig) -> Vec<String> {
        self.layer_shares(cfg)
            .iter()
            .filter(|l| l.widths.len() > 1)
            .map(|l| {
                let parts: Vec<String> = l.widths.iter().zip(&l.shares).map(|(w, s)| format!("{w} × {s:.2}")).collect();
                format!("{} layer {}: {}", l.side, l.layer, parts.join(", "))
            })
            .collect()
    }
}

/// One FFN layer's measured routing ([`RoutedCost::layer_shares`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerShares<'c> {
    /// `encoder` or `decoder`.
    pub side: &'static str,
    /// 1-based within its side.
    pub layer: usize,
    pub widths: &'c [usize],
    /// Each expert's share of the layer's (token, slot) pairs.
    pub shares: Vec<f64>,
}

/// sacreBLEU's one-line BLEU summary.
pub fn format_bleu(b: &BleuScore) -> String {
    let p = b.precisions;
    let ratio = if b.ref_len > 0 { b.sys_len as f64 / b.ref_len as f64 } else { 0.0 };
    format!(
        "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
        b.score, p[0], p[1], p[2], p[3], b.bp, ratio, b.sys_len, b.ref_len
    )
}

/// Translates `args.src` and scores the result against `args.reference`.
pub fn evaluate(args: &Args) -> Result<Evaluation> {
    args.decode.search_options()?;
    let src = read_lines(&args.src)?;
    let refs = read_lines(&args.reference)?;
    if src.is_empty() {
        // BLEU over nothing would read as a score of 0.
        return Err(Error::invalid("evaluate", format!("the source {} has no lines", args.src.display())));
    }
    if src.len() != refs.len() {
        return Err(Error::invalid(
            "evaluate",
            format!("{} has {} lines but {} has {}", args.src.display(), src.len(), args.reference.display(), refs.len()),
        ));
    }
    let (model, tok) = load_model_dir(&args.model)?;
    let model = model.to_device(args.decode.device)?;
    let view = model.view()?;
    let start = Instant::now();
    let hyps = args.decode.with_threads(|| translate_lines(&view, &tok, &src, &args.decode))?;
    let seconds = start.elapsed().as_secs_f64();
    let bleu = corpus_bleu(&hyps, &refs)?;
    let chrf = corpus_chrf(&hyps, &refs)?;
    let routed = args.decode.with_threads(|| RoutedCost::measure(&model, &tok, &src, &refs))?;
    Ok(Evaluation { bleu, chrf, sentences: hyps.len(), hypotheses: hyps, seconds, routed, config: model.config.clone() })
}

/// What `--json` writes: everything `run` prints, as numbers.
pub fn to_json(args: &Args, e: &Evaluation) -> serde_json::Value {
    let d = &args.decode;
    let routed = e.routed.as_ref().map(|r| {
        let tokens = |l: &[crate::model::LayerRouting]| l.first().map_or(0, |l| l.tokens);
        let layers = r.layer_shares(&e.config);
        let side = |name: &str| -> Vec<serde_json::Value> {
            layers.iter().filter(|l| l.side == name).map(|l| json!({ "expert_widths": l.widths, "shares": l.shares })).collect()
        };
        json!({
            "source_tokens": tokens(&r.counts.encoder),
            "target_tokens": tokens(&r.counts.decoder),
            "gflops": r.gflops,
            "uniform_gflops": r.uniform_gflops,
            "active_params": r.active_params,
            "uniform_active_params": r.uniform_active_params,
            "encoder": side("encoder"),
            "decoder": side("decoder"),
        })
    });
    let b = &e.bleu;
    json!({
        "model": args.model,
        "src": args.src,
        "ref": args.reference,
        "sentences": e.sentences,
        "seconds": e.seconds,
        "decoding": { "beam": d.beam, "lenpen": d.lenpen, "max_len_a": d.max_len_a, "max_len_b": d.max_len_b, "min_len": d.min_len },
        "bleu": {
            "score": b.score, "precisions": b.precisions, "bp": b.bp, "sys_len": b.sys_len, "ref_len": b.ref_len,
            "signature": b.signature(),
        },
        "chrf": { "score": e.chrf.score, "signature": e.chrf.signature() },
        "routed_cost": routed,
    })
}

pub fn run(args: Args) -> Result<()> {
    let mut outputs = Vec::new();
    for (path, what) in [(&args.hyp_out, "evaluate --hyp-out"), (&args.json, "evaluate --json")] {
        if let Some(p) = path {
            check_output_file(p, what)?;
            outputs.push((what, p.as_path()));
        }
    }
    let files = crate::cli::translate::model_dir_files(&args.model);
    let mut inputs: Vec<(&'static str, &std::path::Path)> = vec![("--src", &args.src), ("--ref", &args.reference)];
    inputs.extend(files.iter().map(|(what, f)| (*what, f.as_path())));
    check_distinct_outputs(&outputs, &inputs)?;
    let e = evaluate(&args)?;
    if let Some(p) = &args.hyp_out {
        write_output(Some(p), &e.hypotheses)?;
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&to_json(&args, &e)).map_err(|err| Error::invalid("evaluate --json", err.to_string()))?;
        write_atomic(p, format!("{text}\n").as_bytes())?;
    }
    let d = &args.decode;
    println!("model: {}", args.model.display());
    println!(
        "decoding: beam {} lenpen {} max_len {}*src+{}; {} sentences in {:.1} s ({:.1} sentences/s)",
        d.beam,
        d.lenpen,
        d.max_len_a,
        d.max_len_b,
        e.sentences,
        e.seconds,
        e.sentences as f64 / e.seconds.max(1e-9)
    );
    println!("{}", format_bleu(&e.bleu));
    println!("BLEU signature: {}", e.bleu.signature());
    println!("chrF2 = {:.2}", e.chrf.score);
    println!("chrF signature: {}", e.chrf.signature());
    if let Some(r) = &e.routed {
        let tokens = |l: &[crate::model::LayerRouting]| l.first().map_or(0, |l| l.tokens);
        println!(
            "routing measured teacher-forced over {} source and {} target tokens:",
            tokens(&r.counts.encoder),
            tokens(&r.counts.decoder)
        );
        println!(
            "GFLOPs (30-token source and target): {:.3} under the routing measured on this test set, {:.3} under uniform routing",
            r.gflops, r.uniform_gflops
        );
        println!(
            "active params per token (M, no embedding): {:.2} measured routing, {:.2} uniform",
            r.active_params / 1e6,
            r.uniform_active_params / 1e6
        );
        for line in r.share_lines(&e.config) {
            println!("  {line}");
        }
    }
    Ok(())
}
