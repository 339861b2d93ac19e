//! `automoe evaluate`: translate a test set with a saved model and score it with BLEU and chrF
//! (sacreBLEU 2.6.0-compatible, with sacreBLEU's signatures), e.g. Multi30k's test_2016_flickr
//! with AutoMoE's setting (beam 4, length penalty 0.6: the defaults).

use std::path::PathBuf;
use std::time::Instant;

use super::translate::{load_model_dir, translate_lines, write_output, DecodeArgs};
use crate::data::read_lines;
use crate::decode::bleu::{corpus_bleu, BleuScore};
use crate::decode::chrf::{corpus_chrf, ChrfScore};
use crate::{Error, Result};

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
    Ok(Evaluation { bleu, chrf, sentences: hyps.len(), hypotheses: hyps, seconds })
}

pub fn run(args: Args) -> Result<()> {
    let e = evaluate(&args)?;
    if let Some(p) = &args.hyp_out {
        write_output(Some(p), &e.hypotheses)?;
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
    Ok(())
}
