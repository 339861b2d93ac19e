//! Translation latency by AutoMoE's protocol (inherited from HAT): batch 1, a 30-token source,
//! the encoder once, then 30 incremental decoder steps at beam 5, exactly 30 (eos is forbidden,
//! so a random or a trained model does the same work); 5 warm-up runs, then timed runs whose
//! top and bottom 10 % are dropped, separately for the encoder and the decoder as HAT does;
//! latency = mean encoder time + mean decoder time.
//!
//! The decoder time holds what translating costs after the encoder: projecting each decoder
//! layer's encoder keys and values (fairseq does this in its first decoder step), expanding the
//! sentence into the beam, and per step the decoder, the log-softmax over the vocabulary, the
//! choice of the best `2 * beam` candidates and the reordering of the caches.
//!
//! Used by the search (issue 9) as its latency measurement, and by `benches/translate_latency.rs`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::candidates::{merge_rows, step_candidates, Allowed};
use super::search::{MAX_BEAM, MAX_POSITIONS};
use crate::data::tokenizer::{EOS_ID, PAD_ID};
use crate::model::{ModelView, SourceBatch};
use crate::{Error, Result};

/// What a timing reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// Wall-clock time: the protocol's latency, on a machine the timing has to itself.
    #[default]
    Wall,
    /// CPU time of the (single) timing thread: on a shared machine, where other processes take
    /// the cores away at random, this estimates what the wall clock would read on an idle one.
    /// Only meaningful with one thread (all work then runs on that thread) and on the CPU.
    Cpu,
}

impl Clock {
    /// Current reading in milliseconds since `start` (wall) or since the thread started (CPU).
    pub fn now_ms(self, start: Instant) -> Result<f64> {
        match self {
            Clock::Wall => Ok(start.elapsed().as_secs_f64() * 1e3),
            Clock::Cpu => thread_cpu_ms(),
        }
    }
}

/// CPU time consumed by the calling thread, milliseconds.
fn thread_cpu_ms() -> Result<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; the clock id is a
    // constant the platform defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Err(Error::invalid("latency clock", format!("the thread CPU clock is unavailable: {}", std::io::Error::last_os_error())));
    }
    Ok(ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6)
}

/// What to time: the one protocol of the crate, used by evaluation ([`measure`]), the search's
/// meter (`search::SubnetLatencyMeter`) and the benchmarks. [`LatencyProtocol::paper`] (also
/// [`Default`]) is AutoMoE's; [`LatencyProtocol::fast`] trades repetitions for speed when many
/// subnets are measured (the predictor's dataset).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyProtocol {
    /// Source tokens, including the eos.
    pub src_len: usize,
    /// Decoder steps (target tokens), always all of them.
    pub steps: usize,
    pub beam: usize,
    pub warmup: usize,
    /// Timed runs before trimming.
    pub runs: usize,
    /// Fraction of the timed runs dropped at each end (0.1: the fastest and slowest 10 %).
    pub trim: f64,
    /// Threads to run on (a dedicated rayon pool); `None`: the current pool.
    pub threads: Option<usize>,
    /// Wall clock (the protocol) or the timing thread's CPU time (shared machines; one thread).
    #[serde(default)]
    pub clock: Clock,
}

impl Default for LatencyProtocol {
    fn default() -> Self {
        Self::paper()
    }
}

/// Mean times of the kept runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    pub encoder_ms: f64,
    pub decoder_ms: f64,
    /// `encoder_ms + decoder_ms`.
    pub total_ms: f64,
    /// Threads the runs had.
    pub threads: usize,
    /// Timed runs averaged (after trimming).
    pub runs_kept: usize,
}

/// Most warm-up or timed runs a protocol may ask for.
pub const MAX_RUNS: usize = 100_000;

impl LatencyProtocol {
    /// AutoMoE's protocol (HAT's): a 30-token source, 30 decoder steps at beam 5, 5 warm-up runs,
    /// 20 timed runs with the fastest and slowest 10 % dropped, the wall clock, the current pool.
    pub fn paper() -> Self {
        LatencyProtocol { src_len: 30, steps: 30, beam: 5, warmup: 5, runs: 20, trim: 0.1, threads: None, clock: Clock::Wall }
    }

    /// The paper's shapes with fewer repetitions: one warm-up, five timed runs, the fastest and
    /// the slowest dropped (trim 0.2).
    pub fn fast() -> Self {
        LatencyProtocol { warmup: 1, runs: 5, trim: 0.2, ..Self::paper() }
    }

    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid("LatencyProtocol", msg));
        if self.src_len == 0 || self.steps == 0 || self.beam == 0 || self.runs == 0 {
            return bad(format!(
                "src_len {}, steps {}, beam {} and runs {} must all be positive",
                self.src_len, self.steps, self.beam, self.runs
            ));
        }
        let limits = [
            ("src_len", self.src_len, MAX_POSITIONS),
            ("steps", self.steps, MAX_POSITIONS - 1),
            ("beam", self.beam, MAX_BEAM),
            ("warmup", self.warmup, MAX_RUNS),
            ("runs", self.runs, MAX_RUNS),
        ];
        if let Some((name, v, max)) = limits.into_iter().find(|&(_, v, max)| v > max) {
            return bad(format!("{name} = {v} is above the limit of {max}"));
        }
        if !(0.0..0.5).contains(&self.trim) {
            return bad(format!("trim {} must be in [0, 0.5)", self.trim));
        }
        if self.threads == Some(0) {
            return bad("threads must be at least 1".into());
        }
        if self.clock == Clock::Cpu && self.threads.is_some_and(|t| t != 1) {
            return bad(format!("the CPU clock measures one thread's time, so it needs 1 thread (got {:?})", self.threads));
        }
        Ok(())
    }

    /// What is timed, and where: `device` with `threads` host threads.
    pub fn describe(&self, device: crate::Device, threads: usize) -> String {
        let place = if device.is_cuda() { format!("{device} (host: {threads} thread(s))") } else { format!("cpu, {threads} thread(s)") };
        let clock = match self.clock {
            Clock::Wall => "wall",
            Clock::Cpu => "thread-CPU",
        };
        format!(
            "{place}, {clock} clock; source {} tokens, {} decoder steps at beam {}, {} warm-up + {} timed runs, trim {}; \
             incremental decoder",
            self.src_len, self.steps, self.beam, self.warmup, self.runs, self.trim
        )
    }

    /// Runs dropped at each end.
    fn dropped(&self) -> usize {
        trimmed_count(self.runs, self.trim)
    }
}

/// Measures `model` by the protocol (see the module doc).
pub fn measure(model: &ModelView, proto: &LatencyProtocol) -> Result<LatencyReport> {
    proto.check()?;
    match proto.threads {
        None => measure_here(model, proto),
        Some(n) => crate::device::cpu_pool(n, "latency threads")?.install(|| measure_here(model, proto)),
    }
}

/// Refuses the thread-CPU clock in a pool of more than one thread (the other threads' work
/// would not be counted).
fn check_pool(proto: &LatencyProtocol) -> Result<()> {
    if proto.clock == Clock::Cpu && rayon::current_num_threads() != 1 {
        return Err(Error::invalid(
            "latency",
            format!("the CPU clock measures one thread's time, but the pool has {} threads", rayon::current_num_threads()),
        ));
    }
    Ok(())
}

/// Times `count` models in rounds: each round hands every model in turn (`with_model(i, time)`
/// calls `time` with model `i`'s view) `warmup` untimed runs and one timed run; a model's latency
/// is the trimmed mean over the `runs` rounds. On a shared machine whose load drifts over
/// minutes, every model's timings then spread over the whole measurement, so the drift hits all
/// of them alike instead of ranking them by when each happened to be measured. `with_model`
/// decides how a model is held (the latency dataset re-extracts each subnet per round, to keep
/// one in memory at a time). `progress` gets the rounds done.
pub fn measure_in_rounds<F>(
    count: usize,
    proto: &LatencyProtocol,
    with_model: F,
    progress: impl FnMut(usize) + Send,
) -> Result<Vec<LatencyReport>>
where
    F: FnMut(usize, &mut dyn FnMut(&ModelView) -> Result<()>) -> Result<()> + Send,
{
    proto.check()?;
    match proto.threads {
        None => rounds_here(count, proto, with_model, progress),
        Some(n) => crate::device::cpu_pool(n, "latency threads")?.install(|| rounds_here(count, proto, with_model, progress)),
    }
}

fn rounds_here<F>(count: usize, proto: &LatencyProtocol, mut with_model: F, mut progress: impl FnMut(usize)) -> Result<Vec<LatencyReport>>
where
    F: FnMut(usize, &mut dyn FnMut(&ModelView) -> Result<()>) -> Result<()>,
{
    check_pool(proto)?;
    let mut enc = vec![Vec::with_capacity(proto.runs); count];
    let mut dec = vec![Vec::with_capacity(proto.runs); count];
    for round in 0..proto.runs {
        for i in 0..count {
            with_model(i, &mut |view| {
                for _ in 0..proto.warmup {
                    time_one_run(view, proto)?;
                }
                let (e, d) = time_one_run(view, proto)?;
                enc[i].push(e);
                dec[i].push(d);
                Ok(())
            })?;
            if enc[i].len() != round + 1 {
                return Err(Error::invalid("latency", format!("model {i} was not timed in round {}", round + 1)));
            }
        }
        progress(round + 1);
    }
    Ok(enc.iter().zip(&dec).map(|(e, d)| report_of(e, d, proto)).collect())
}

/// The trimmed means of one model's timed runs (`check` refused `runs == 0`, so both exist).
fn report_of(enc_ms: &[f64], dec_ms: &[f64], proto: &LatencyProtocol) -> LatencyReport {
    let encoder_ms = trimmed_mean(enc_ms, proto.trim).unwrap_or(f64::NAN);
    let decoder_ms = trimmed_mean(dec_ms, proto.trim).unwrap_or(f64::NAN);
    LatencyReport {
        encoder_ms,
        decoder_ms,
        total_ms: encoder_ms + decoder_ms,
        threads: rayon::current_num_threads(),
        runs_kept: proto.runs - 2 * proto.dropped(),
    }
}

fn measure_here(model: &ModelView, proto: &LatencyProtocol) -> Result<LatencyReport> {
    check_pool(proto)?;
    let mut enc_ms = Vec::with_capacity(proto.runs);
    let mut dec_ms = Vec::with_capacity(proto.runs);
    for run in 0..proto.warmup + proto.runs {
        let (e, d) = time_one_run(model, proto)?;
        if run >= proto.warmup {
            enc_ms.push(e);
            dec_ms.push(d);
        }
    }
    Ok(report_of(&enc_ms, &dec_ms, proto))
}

/// The protocol's source: `src_len - 1` ordinary tokens spread over the vocabulary (never the
/// specials 0..4), then eos.
pub fn latency_source(vocab: usize, src_len: usize) -> Result<Vec<u32>> {
    if vocab <= 4 {
        return Err(Error::invalid("latency", format!("a vocabulary of {vocab} has no ordinary tokens to feed")));
    }
    let mut src: Vec<u32> = (0..src_len.saturating_sub(1)).map(|i| 4 + ((i * 7919) % (vocab - 4)) as u32).collect();
    src.push(EOS_ID);
    Ok(src)
}

/// One timed run of the protocol on the current thread pool (no warm-up, no repetition) by the
/// protocol's clock: `(encoder ms, decoder ms)`. For callers that schedule runs themselves (the
/// search's meter).
pub fn time_one_run(model: &ModelView, proto: &LatencyProtocol) -> Result<(f64, f64)> {
    proto.check()?;
    let start = Instant::now();
    let now_ms = || proto.clock.now_ms(start);
    let batch = SourceBatch::from_sentences(&[latency_source(model.vocab(), proto.src_len)?], PAD_ID)?;
    let t0 = now_ms()?;
    let enc = model.encode(&batch)?;
    // On a GPU the encoder's kernels are queued: wait for them, or their time lands in the decoder's.
    model.synchronize()?;
    let t1 = now_ms()?;
    decode_fixed(model, &enc, proto)?;
    let t2 = now_ms()?;
    Ok((t1 - t0, t2 - t1))
}

/// Beam search of exactly `steps` tokens (eos forbidden) for one sentence.
fn decode_fixed(model: &ModelView, enc: &crate::model::EncoderOutput, proto: &LatencyProtocol) -> Result<()> {
    let mut state = model.start(enc)?;
    state.reorder(&vec![0; proto.beam])?;
    let mut scores = vec![0.0f64; proto.beam];
    let mut tokens = vec![crate::data::tokenizer::BOS_ID; proto.beam];
    let no_eos = vec![Allowed::Tokens { eos: false }; proto.beam];
    for step in 0..proto.steps {
        let per_row = step_candidates(&model.step(&mut state, &tokens)?, &scores, &no_eos, 2 * proto.beam)?;
        // The beam's rows are identical at the first step: only the first one proposes.
        let live = if step == 0 { 1 } else { proto.beam };
        let rows: Vec<usize> = (0..live).collect();
        let cands = merge_rows(&per_row, &rows, 2 * proto.beam);
        let keep: Vec<_> = cands.iter().take(proto.beam).collect();
        if keep.len() < proto.beam {
            return Err(Error::invalid("latency", format!("only {} candidates for a beam of {}", keep.len(), proto.beam)));
        }
        let order: Vec<u32> = keep.iter().map(|c| c.hyp as u32).collect();
        scores = keep.iter().map(|c| c.score).collect();
        tokens = keep.iter().map(|c| c.token).collect();
        state.reorder(&order)?;
    }
    Ok(())
}

/// Mean of `samples` without the `floor(trim * n)` smallest and largest values (at least one value
/// is always kept; `trim` is clamped to [0, 0.5]). `None` for no samples.
pub fn trimmed_mean(samples: &[f64], trim: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let cut = trimmed_count(s.len(), trim);
    let kept = &s[cut..s.len() - cut];
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// Values dropped at each end of `n >= 1` samples by [`trimmed_mean`].
fn trimmed_count(n: usize, trim: f64) -> usize {
    ((trim.clamp(0.0, 0.5) * n as f64).floor() as usize).min((n - 1) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_mean_drops_both_tails() {
        assert_eq!(trimmed_mean(&[], 0.1), None);
        assert_eq!(trimmed_mean(&[5.0], 0.4), Some(5.0));
        // 10 values, trim 0.1: drop 1 at each end.
        let v: Vec<f64> = (1..=9).map(f64::from).chain([1000.0]).collect();
        assert_eq!(trimmed_mean(&v, 0.1), Some((2..=9).map(f64::from).sum::<f64>() / 8.0));
        assert_eq!(trimmed_mean(&[1.0, 2.0, 3.0], 0.0), Some(2.0));
    }

    #[test]
    fn trimming() {
        let p = LatencyProtocol::default();
        assert_eq!(p.dropped(), 2);
        assert_eq!(trimmed_mean(&[100.0, 1.0, 2.0, 3.0, 0.0], 0.2), Some(2.0));
        assert_eq!(LatencyProtocol { runs: 2, ..p }.dropped(), 0);
        assert!(LatencyProtocol { trim: 0.5, ..p }.check().is_err());
        assert!(LatencyProtocol { threads: Some(0), ..p }.check().is_err());
        assert!(LatencyProtocol { clock: Clock::Cpu, threads: Some(2), ..p }.check().is_err());
        assert!(LatencyProtocol { clock: Clock::Cpu, threads: Some(1), ..p }.check().is_ok());
        assert_eq!(LatencyProtocol::default(), LatencyProtocol::paper());
        assert!(LatencyProtocol::fast().check().is_ok());
        // Sizes past the limits are errors naming the setting (they would abort in an allocation).
        for (q, name) in [
            (LatencyProtocol { src_len: MAX_POSITIONS + 1, ..p }, "src_len = 1025"),
            (LatencyProtocol { steps: MAX_POSITIONS, ..p }, "steps = 1024"),
            (LatencyProtocol { beam: usize::MAX, ..p }, "beam"),
            (LatencyProtocol { runs: MAX_RUNS + 1, ..p }, "runs"),
            (LatencyProtocol { warmup: MAX_RUNS + 1, ..p }, "warmup"),
        ] {
            let e = q.check().unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("limit"), "{e}");
        }
        assert!(LatencyProtocol { src_len: MAX_POSITIONS, steps: MAX_POSITIONS - 1, ..p }.check().is_ok());
    }
}
