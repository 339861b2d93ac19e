//! `automoe translate`: translate text with a saved model.
//!
//! A model directory is what [`SubnetModel::save`] writes (`model.safetensors`, `model.json`)
//! plus the `tokenizer.json` the model was trained with. Input: one sentence per line (stdin or
//! `--input`); output: one translation per line, in input order (stdout or `--output`, written
//! atomically). Empty lines translate to empty lines without running the model. Sentences are
//! sorted by length and decoded in batches of `--batch-size`, so that a batch wastes little on
//! padding. With `--nbest N` (N <= beam) each sentence gives up to N lines
//! `SENTENCE ||| TRANSLATION ||| SCORE`, best first (the 0-based input line, the length-normalised
//! score the beam ranks by), the n-best format of Moses and Marian.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::data::corpus::read_lines_from;
use crate::data::tokenizer::EOS_ID;
use crate::data::{read_lines, Tokenizer};
use crate::decode::{translate_nbest, SearchOptions, MAX_POSITIONS};
use crate::fsio::write_atomic;
use crate::model::{ModelView, SubnetModel};
use crate::{Error, Result};

/// The tokenizer's file name inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Decoding settings shared by `translate` and `evaluate`.
#[derive(clap::Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Sentences decoded together.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Beam size (1: greedy search). AutoMoE evaluates with 4.
    #[arg(long, default_value_t = 4)]
    pub beam: usize,
    /// Length penalty: hypotheses are ranked by score / len^lenpen (fairseq's).
    #[arg(long, default_value_t = 0.6)]
    pub lenpen: f64,
    /// Maximum output length max_len_a * source tokens + max_len_b (fairseq's --max-len-a/b).
    #[arg(long, default_value_t = 1.2)]
    pub max_len_a: f64,
    #[arg(long, default_value_t = 10)]
    pub max_len_b: usize,
    /// Tokens a translation has at least (fairseq's --min-len; 0 allows an empty translation).
    #[arg(long, default_value_t = 1)]
    pub min_len: usize,
    /// Longest source accepted, in tokens including the end-of-sentence token.
    #[arg(long, default_value_t = MAX_POSITIONS)]
    pub max_source_len: usize,
    /// Cut sources longer than --max-source-len instead of stopping with an error.
    #[arg(long)]
    pub truncate: bool,
    /// CPU threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to run the model: `cpu`, `cuda` / `cuda:N`, or `emu` (the CUDA kernels on the CPU
    /// emulator; slow).
    #[arg(long, default_value = "cpu", value_parser = super::train::parse_device)]
    pub device: crate::Device,
}

impl Default for DecodeArgs {
    fn default() -> Self {
        DecodeArgs {
            batch_size: 32,
            beam: 4,
            lenpen: 0.6,
            max_len_a: 1.2,
            max_len_b: 10,
            min_len: 1,
            max_source_len: MAX_POSITIONS,
            truncate: false,
            threads: None,
            device: crate::Device::Cpu,
        }
    }
}

impl DecodeArgs {
    pub fn search_options(&self) -> Result<SearchOptions> {
        let o = SearchOptions {
            beam: self.beam,
            len_penalty: self.lenpen,
            max_len_a: self.max_len_a,
            max_len_b: self.max_len_b,
            min_len: self.min_len,
            ..SearchOptions::default()
        };
        o.check()?;
        if self.batch_size == 0 {
            return Err(Error::invalid("decode", "--batch-size must be at least 1"));
        }
        if self.max_source_len < 2 {
            return Err(Error::invalid("decode", "--max-source-len must be at least 2 (one token and the end of sentence)"));
        }
        Ok(o)
    }

    /// Runs `f` on `--threads` threads (a dedicated rayon pool), or on the global pool.
    pub fn with_threads<T>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T>
    where
        T: Send,
    {
        match self.threads {
            None => f(),
            Some(0) => Err(Error::invalid("decode", "--threads must be at least 1")),
            Some(n) => crate::device::cpu_pool(n, "--threads")?.install(f),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory: model.safetensors, model.json and tokenizer.json.
    pub model: PathBuf,
    /// Input text, one sentence per line (default: stdin). `.gz` files are decompressed.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where to write the translations (default: stdout); written to a temporary file and renamed.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Write the N best translations of each sentence (N <= --beam) as
    /// `SENTENCE ||| TRANSLATION ||| SCORE` lines, best first.
    #[arg(long, default_value_t = 1)]
    pub nbest: usize,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// The files of a model directory ([`load_model_dir`] reads them), each with its name for
/// [`crate::fsio::check_distinct_outputs`]: no command's output may replace one.
pub fn model_dir_files(dir: &Path) -> [(&'static str, PathBuf); 3] {
    [
        ("the model's model.json", dir.join(crate::model::supernet::CONFIG_FILE)),
        ("the model's model.safetensors", dir.join(crate::model::supernet::WEIGHTS_FILE)),
        ("the model's tokenizer.json", dir.join(TOKENIZER_FILE)),
    ]
}

/// Loads a model directory's model and tokenizer, checking that they belong together.
pub fn load_model_dir(dir: &Path) -> Result<(SubnetModel, Tokenizer)> {
    // Probed with `metadata_if_exists`, so a directory that may not be read is an I/O error
    // naming it, not a missing file.
    use crate::fsio::metadata_if_exists;
    let is_file = |p: &Path| -> Result<bool> { Ok(metadata_if_exists(p)?.is_some_and(|m| m.is_file())) };
    match metadata_if_exists(dir)? {
        None => return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"))),
        Some(m) if !m.is_dir() => {
            return Err(Error::invalid("model directory", format!("{} is not a directory", dir.display())));
        }
        Some(_) => {}
    }
    // A training run's directory (`automoe train --out`, a pipeline's `systems/<name>`) holds its
    // tokenizer and, one level down, the model: point there rather than at a missing model.json.
    let inner = crate::train::mt::model_dir(dir);
    let config = crate::model::supernet::CONFIG_FILE;
    if metadata_if_exists(&dir.join(config))?.is_none() && is_file(&inner.join(config))? {
        return Err(Error::invalid(
            "model directory",
            format!("{} is a training run's directory, not a model's: its model is {}", dir.display(), inner.display()),
        ));
    }
    let tok_path = dir.join(TOKENIZER_FILE);
    if !is_file(&tok_path)? {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            msg: format!("no {TOKENIZER_FILE} in the model directory: copy the tokenizer the model was trained with next to its weights"),
        });
    }
    let model = SubnetModel::load(dir)?;
    let tok = Tokenizer::load(&tok_path)?;
    if tok.vocab_size() != model.vocab {
        return Err(Error::Format {
            path: tok_path,
            msg: format!(
                "the tokenizer has {} tokens but the model's vocabulary has {}: not the model's tokenizer",
                tok.vocab_size(),
                model.vocab
            ),
        });
    }
    Ok((model, tok))
}

/// Encodes one sentence (trimmed; empty to no tokens) within `max_source_len` tokens, its
/// end-of-sentence included: `Ok(Err(n))` when it has `n` tokens, more than that, and `truncate`
/// is not set; with `truncate` such a sentence is cut, keeping its end-of-sentence. The callers
/// word the length error for their own users (a line of a file, an entry of a C array).
pub fn encode_source(
    tok: &Tokenizer,
    sentence: &str,
    max_source_len: usize,
    truncate: bool,
) -> Result<std::result::Result<Vec<u32>, usize>> {
    let text = sentence.trim();
    if text.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let mut ids = tok.encode(text)?;
    if ids.len() > max_source_len {
        if !truncate {
            return Ok(Err(ids.len()));
        }
        ids.truncate(max_source_len - 1);
        ids.push(EOS_ID);
    }
    Ok(Ok(ids))
}

/// Encodes `lines` as [`encode_source`] does; a line too long is an error naming its 1-based
/// line number.
pub fn encode_lines(tok: &Tokenizer, lines: &[String], max_source_len: usize, truncate: bool) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match encode_source(tok, line, max_source_len, truncate)? {
            Ok(ids) => out.push(ids),
            Err(n) => {
                return Err(Error::invalid(
                    "translate",
                    format!(
                        "line {}: {n} tokens, more than the maximum source length {max_source_len} (use --truncate to cut long lines)",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// Translates `lines` (one sentence each) with the settings of `args`; one output line per input
/// line, in order.
pub fn translate_lines(model: &ModelView, tok: &Tokenizer, lines: &[String], args: &DecodeArgs) -> Result<Vec<String>> {
    let nbest = translate_lines_nbest(model, tok, lines, args, 1)?;
    Ok(nbest.into_iter().map(|mut n| n.swap_remove(0).0).collect())
}

/// The `nbest` best translations of each line with their scores, best first (at least one per
/// line; an empty line gives one empty translation scored 0).
pub fn translate_lines_nbest(
    model: &ModelView,
    tok: &Tokenizer,
    lines: &[String],
    args: &DecodeArgs,
    nbest: usize,
) -> Result<Vec<Vec<(String, f64)>>> {
    let opts = args.search_options()?;
    let sources = encode_lines(tok, lines, args.max_source_len, args.truncate)?;
    let mut order: Vec<usize> = (0..sources.len()).filter(|&i| !sources[i].is_empty()).collect();
    // Longest first: similar lengths share a batch, and the slowest batch shows up early.
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let mut out = vec![vec![(String::new(), 0.0)]; lines.len()];
    for chunk in order.chunks(args.batch_size) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| sources[i].clone()).collect();
        let hyps = translate_nbest(model, &batch, &opts, nbest)?;
        for (&i, hs) in chunk.iter().zip(hyps) {
            out[i] = hs.iter().map(|h| Ok((tok.decode(&h.tokens)?, h.score))).collect::<Result<_>>()?;
        }
    }
    Ok(out)
}

/// The n-best lines `SENTENCE ||| TRANSLATION ||| SCORE` (0-based sentence index, in input order).
pub fn nbest_lines(nbest: &[Vec<(String, f64)>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, hyps) in nbest.iter().enumerate() {
        out.extend(hyps.iter().map(|(text, score)| format!("{i} ||| {text} ||| {score:.6}")));
    }
    out
}

/// Reads lines from a file (`.gz` allowed) or, with `None`, from stdin.
pub fn read_input(path: Option<&Path>) -> Result<Vec<String>> {
    match path {
        Some(p) => read_lines(p),
        None => read_lines_from(std::io::stdin().lock(), Path::new("<stdin>")),
    }
}

/// Writes one line per entry to a file (atomically) or, with `None`, to stdout.
pub fn write_output(path: Option<&Path>, lines: &[String]) -> Result<()> {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    match path {
        Some(p) => write_atomic(p, text.as_bytes()),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(|e| Error::io("<stdout>", e))
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    args.decode.search_options()?;
    if args.nbest == 0 || args.nbest > args.decode.beam {
        return Err(Error::invalid("translate", format!("--nbest {} must be 1 to --beam ({})", args.nbest, args.decode.beam)));
    }
    if let Some(p) = &args.output {
        crate::fsio::check_output_file(p, "translate --output")?;
        let files = model_dir_files(&args.model);
        let mut inputs: Vec<(&'static str, &Path)> = files.iter().map(|(what, f)| (*what, f.as_path())).collect();
        inputs.extend(args.input.as_deref().map(|i| ("--input", i)));
        crate::fsio::check_distinct_outputs(&[("translate --output", p)], &inputs)?;
    }
    let (model, tok) = load_model_dir(&args.model)?;
    let model = model.to_device(args.decode.device)?;
    let lines = read_input(args.input.as_deref())?;
    let view = model.view()?;
    let out = if args.nbest == 1 {
        args.decode.with_threads(|| translate_lines(&view, &tok, &lines, &args.decode))?
    } else {
        nbest_lines(&args.decode.with_threads(|| translate_lines_nbest(&view, &tok, &lines, &args.decode, args.nbest))?)
    };
    write_output(args.output.as_deref(), &out)
}
