//! Translation through the C ABI: UTF-8 sentences or token ids in, a result object out.

use std::ffi::{c_char, CString};

use super::boundary::{ffi_call, str_arg, Failure};
use super::header::*;
use super::model::{model_ref, ModelHandle};
use crate::cli::translate::encode_source;
use crate::data::EOS_ID;
use crate::decode::search::{translate_nbest, SearchOptions, MAX_POSITIONS};

/// Sentences translated per call of the search: similar lengths share a batch.
const BATCH: usize = 32;

/// One hypothesis of a result.
struct Entry {
    text: CString,
    ids: Vec<u32>,
    score: f64,
}

/// What an `automoe_translations*` points to: per sentence its hypotheses, best first (one, or up
/// to `nbest` from `automoe_translate_nbest`; never none).
struct Translations {
    sentences: Vec<Vec<Entry>>,
}

impl Translations {
    fn entry(&self, index: usize, rank: usize) -> Option<&Entry> {
        self.sentences.get(index).and_then(|hyps| hyps.get(rank))
    }
}

fn search_options(p: *const automoe_decode_options, function: &str) -> Result<SearchOptions, Failure> {
    let mut o = automoe_decode_options::default();
    // SAFETY: `o` is a valid, writable options struct; the defaults live in one place.
    unsafe { super::model::automoe_decode_options_init(&mut o) };
    if !p.is_null() {
        // SAFETY: a non-null `options` points to a readable automoe_decode_options of the
        // caller's header, whose first field is its size in every version (the contract).
        let size = unsafe { p.cast::<usize>().read() };
        let ours = std::mem::size_of::<automoe_decode_options>();
        // Every size this library knows is its own: struct_size came with the first release. A
        // later one reads the prefix of an older header's struct and defaults the rest.
        if size != ours {
            let (status, why) = if size > ours {
                (AUTOMOE_UNSUPPORTED, "the options come from a newer automoe.h than this library; link the library of that header")
            } else {
                (AUTOMOE_INVALID_ARGUMENT, "the options were not initialised with automoe_decode_options_init")
            };
            return Err(Failure::new(status, format!("{function}: options.struct_size is {size}, this library's is {ours}: {why}")));
        }
        // SAFETY: as above, and the caller's struct has this library's size.
        o = unsafe { p.read() };
    }
    let opts = SearchOptions {
        beam: o.beam as usize,
        len_penalty: f32_as_written(o.length_penalty),
        max_len_a: f32_as_written(o.max_len_a),
        max_len_b: o.max_len_b as usize,
        ..SearchOptions::default()
    };
    opts.check().map_err(|e| Failure::new(AUTOMOE_INVALID_ARGUMENT, format!("{function}: {e}")))?;
    Ok(opts)
}

/// An f32 option as the decimal a caller writes: 0.6f as 0.6, not 0.6000000238, which is what the
/// CLI and the Rust API (f64 options) use for the same setting; a widened 0.6f ranked hypotheses
/// by len^0.6000000238 and gave scores that differed from theirs in the 8th digit.
fn f32_as_written(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Translates `sources` (token ids ending in eos; empty = empty output), longest first in
/// batches, keeping the `nbest` best hypotheses of each.
fn run(m: &ModelHandle, sources: &[Vec<u32>], opts: &SearchOptions, nbest: usize) -> crate::Result<Translations> {
    let view = m.model.view()?;
    let mut order: Vec<usize> = (0..sources.len()).filter(|&i| !sources[i].is_empty()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].len()));
    let empty = || vec![Entry { text: CString::default(), ids: Vec::new(), score: 0.0 }];
    let mut out = Translations { sentences: (0..sources.len()).map(|_| empty()).collect() };
    for chunk in order.chunks(BATCH) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| sources[i].clone()).collect();
        for (&i, hyps) in chunk.iter().zip(translate_nbest(&view, &batch, opts, nbest)?) {
            let mut entries = Vec::with_capacity(hyps.len());
            for h in hyps {
                let text = m.tokenizer.decode(&h.tokens)?;
                // Decoded text cannot hold NUL unless the vocabulary does; replace rather than fail.
                let text = CString::new(text.replace('\0', "\u{FFFD}")).unwrap_or_default();
                entries.push(Entry { text, ids: h.tokens, score: h.score });
            }
            out.sentences[i] = entries;
        }
    }
    Ok(out)
}

/// The sentences of a C array of `count` NUL-terminated strings, as source ids.
///
/// # Safety
/// `sentences` NULL (only with `count == 0`) or `count` pointers to NUL-terminated strings.
unsafe fn sentence_sources(m: &ModelHandle, sentences: *const *const c_char, count: usize, f: &str) -> Result<Vec<Vec<u32>>, Failure> {
    if sentences.is_null() && count > 0 {
        return Err(Failure::null("sentences", f));
    }
    // No with_capacity(count): a wrong count from C must fail on its first bad entry, not abort
    // the process in an allocation of count pointers' worth.
    let mut sources = Vec::new();
    for i in 0..count {
        // SAFETY: `sentences` has `count` readable entries (the contract).
        let p = unsafe { *sentences.add(i) };
        // SAFETY: each entry is NULL or a NUL-terminated string (the contract).
        let text = unsafe { str_arg(p, &format!("sentences[{i}]"), f)? };
        match encode_source(&m.tokenizer, text, MAX_POSITIONS, false)? {
            Ok(ids) => sources.push(ids),
            Err(n) => {
                return Err(Failure::new(
                    AUTOMOE_INVALID_ARGUMENT,
                    format!("{f}: sentences[{i}] has {n} tokens, more than the maximum source length {MAX_POSITIONS}"),
                ))
            }
        }
    }
    Ok(sources)
}

fn write_result(out: *mut *mut automoe_translations, t: Translations) {
    // SAFETY: callers check `out` is non-null; it is writable per the contract.
    unsafe { out.write(Box::into_raw(Box::new(t)) as *mut automoe_translations) };
}

/// What every translate entry point shares: the model, `out`, the options and `nbest`
/// (1..=beam) are checked, then `read` gives the sources, then the result is written to `out`.
///
/// # Safety
/// `model` NULL or live; `options` NULL or readable; `out` NULL or writable.
unsafe fn translate_into(
    model: *const automoe_model,
    options: *const automoe_decode_options,
    nbest: usize,
    out: *mut *mut automoe_translations,
    f: &'static str,
    read: impl FnOnce(&ModelHandle) -> Result<Vec<Vec<u32>>, Failure>,
) -> automoe_status {
    ffi_call(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { model_ref(model, f)? };
        if out.is_null() {
            return Err(Failure::null("out", f));
        }
        let opts = search_options(options, f)?;
        if nbest == 0 || nbest > opts.beam {
            return Err(Failure::new(AUTOMOE_INVALID_ARGUMENT, format!("{f}: nbest = {nbest} must be 1 to the beam size ({})", opts.beam)));
        }
        let sources = read(m)?;
        write_result(out, run(m, &sources, &opts, nbest)?);
        Ok(())
    })
}

/// # Safety
/// `model` NULL or live; `sentences` NULL (only with `count == 0`) or `count` pointers to
/// NUL-terminated strings; `options` NULL or readable; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_translate(
    model: *const automoe_model,
    sentences: *const *const c_char,
    count: usize,
    options: *const automoe_decode_options,
    out: *mut *mut automoe_translations,
) -> automoe_status {
    const F: &str = "automoe_translate";
    // SAFETY: forwarded from this function's contract.
    unsafe { translate_into(model, options, 1, out, F, |m| sentence_sources(m, sentences, count, F)) }
}

/// # Safety
/// As [`automoe_translate`].
#[no_mangle]
pub unsafe extern "C" fn automoe_translate_nbest(
    model: *const automoe_model,
    sentences: *const *const c_char,
    count: usize,
    options: *const automoe_decode_options,
    nbest: usize,
    out: *mut *mut automoe_translations,
) -> automoe_status {
    const F: &str = "automoe_translate_nbest";
    // SAFETY: forwarded from this function's contract.
    unsafe { translate_into(model, options, nbest, out, F, |m| sentence_sources(m, sentences, count, F)) }
}

/// # Safety
/// `model` NULL or live; `ids` and `lengths` NULL (only with `count == 0`) or `count` entries,
/// `ids[i]` pointing to `lengths[i]` readable ids (NULL allowed when the length is 0); `options`
/// NULL or readable; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_translate_ids(
    model: *const automoe_model,
    ids: *const *const u32,
    lengths: *const usize,
    count: usize,
    options: *const automoe_decode_options,
    out: *mut *mut automoe_translations,
) -> automoe_status {
    const F: &str = "automoe_translate_ids";
    // SAFETY: forwarded from this function's contract.
    unsafe { translate_into(model, options, 1, out, F, |m| id_sources(m, ids, lengths, count, F)) }
}

/// # Safety
/// As [`automoe_translate_ids`].
#[no_mangle]
pub unsafe extern "C" fn automoe_translate_ids_nbest(
    model: *const automoe_model,
    ids: *const *const u32,
    lengths: *const usize,
    count: usize,
    options: *const automoe_decode_options,
    nbest: usize,
    out: *mut *mut automoe_translations,
) -> automoe_status {
    const F: &str = "automoe_translate_ids_nbest";
    // SAFETY: forwarded from this function's contract.
    unsafe { translate_into(model, options, nbest, out, F, |m| id_sources(m, ids, lengths, count, F)) }
}

/// Pre-tokenised sources (`count` arrays of ids, eos appended), each id checked against the
/// vocabulary.
///
/// # Safety
/// As [`automoe_translate_ids`] says of `ids` and `lengths`.
unsafe fn id_sources(
    m: &ModelHandle,
    ids: *const *const u32,
    lengths: *const usize,
    count: usize,
    f: &str,
) -> Result<Vec<Vec<u32>>, Failure> {
    if count > 0 && (ids.is_null() || lengths.is_null()) {
        return Err(Failure::null(if ids.is_null() { "ids" } else { "lengths" }, f));
    }
    let vocab = m.model.vocab;
    // No with_capacity(count), for the reason sentence_sources gives.
    let mut sources = Vec::new();
    for i in 0..count {
        // SAFETY: `ids` and `lengths` have `count` readable entries (the contract).
        let (p, len) = unsafe { (*ids.add(i), *lengths.add(i)) };
        if len == 0 {
            sources.push(Vec::new());
            continue;
        }
        if p.is_null() {
            return Err(Failure::null(&format!("ids[{i}]"), f));
        }
        // Compared this way round so that a wild length such as usize::MAX cannot wrap.
        if len >= MAX_POSITIONS {
            return Err(Failure::new(
                AUTOMOE_INVALID_ARGUMENT,
                format!("{f}: sentence {i} has {len} ids, more than {}", MAX_POSITIONS - 1),
            ));
        }
        // SAFETY: `ids[i]` points to `lengths[i]` readable ids (the contract).
        let mut s = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
        if let Some((j, &bad)) = s.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
            return Err(Failure::new(AUTOMOE_OUT_OF_RANGE, format!("{f}: ids[{i}][{j}] = {bad} is outside the vocabulary of {vocab}")));
        }
        s.push(EOS_ID);
        sources.push(s);
    }
    Ok(sources)
}

/// # Safety
/// `t` NULL or a live result.
unsafe fn translations_ref<'a>(t: *const automoe_translations) -> Option<&'a Translations> {
    // SAFETY: a non-null pointer came from Box::into_raw(Box<Translations>) (the contract).
    unsafe { (t as *const Translations).as_ref() }
}

/// # Safety
/// `translations` NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_count(translations: *const automoe_translations) -> usize {
    // SAFETY: forwarded from this function's contract.
    unsafe { translations_ref(translations) }.map_or(0, |t| t.sentences.len())
}

/// # Safety
/// `translations` NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_nbest_count(translations: *const automoe_translations, index: usize) -> usize {
    // SAFETY: forwarded from this function's contract.
    unsafe { translations_ref(translations) }.and_then(|t| t.sentences.get(index)).map_or(0, Vec::len)
}

/// # Safety
/// `translations` NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_text(translations: *const automoe_translations, index: usize) -> *const c_char {
    // SAFETY: forwarded from this function's contract.
    unsafe { automoe_translations_nbest_text(translations, index, 0) }
}

/// # Safety
/// `translations` NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_nbest_text(
    translations: *const automoe_translations,
    index: usize,
    rank: usize,
) -> *const c_char {
    // SAFETY: forwarded from this function's contract.
    match unsafe { translations_ref(translations) }.and_then(|t| t.entry(index, rank)) {
        Some(e) => e.text.as_ptr(),
        None => std::ptr::null(),
    }
}

/// # Safety
/// `translations` NULL or a live result; `out_ids`, `out_length` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_ids(
    translations: *const automoe_translations,
    index: usize,
    out_ids: *mut *const u32,
    out_length: *mut usize,
) -> automoe_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { nbest_ids(translations, index, 0, out_ids, out_length, "automoe_translations_ids") }
}

/// # Safety
/// `translations` NULL or a live result; `out_ids`, `out_length` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_nbest_ids(
    translations: *const automoe_translations,
    index: usize,
    rank: usize,
    out_ids: *mut *const u32,
    out_length: *mut usize,
) -> automoe_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { nbest_ids(translations, index, rank, out_ids, out_length, "automoe_translations_nbest_ids") }
}

/// # Safety
/// As [`automoe_translations_nbest_ids`].
unsafe fn nbest_ids(
    translations: *const automoe_translations,
    index: usize,
    rank: usize,
    out_ids: *mut *const u32,
    out_length: *mut usize,
    f: &'static str,
) -> automoe_status {
    ffi_call(|| {
        // SAFETY: forwarded from the caller's contract.
        let t = unsafe { translations_ref(translations) }.ok_or_else(|| Failure::null("translations", f))?;
        if out_ids.is_null() || out_length.is_null() {
            return Err(Failure::null(if out_ids.is_null() { "out_ids" } else { "out_length" }, f));
        }
        let hyps = t.sentences.get(index).ok_or_else(|| {
            Failure::new(AUTOMOE_OUT_OF_RANGE, format!("{f}: index {index} but the result has {} sentences", t.sentences.len()))
        })?;
        let e = hyps.get(rank).ok_or_else(|| {
            Failure::new(AUTOMOE_OUT_OF_RANGE, format!("{f}: rank {rank} but sentence {index} has {} translations", hyps.len()))
        })?;
        // An empty Vec's pointer is dangling (not NULL, not readable): C may not even pass it to
        // memcpy with a length of 0, so an empty translation gives NULL, as the header says.
        let ids = if e.ids.is_empty() { std::ptr::null() } else { e.ids.as_ptr() };
        // SAFETY: both out-pointers are non-null and writable (the contract).
        unsafe {
            out_ids.write(ids);
            out_length.write(e.ids.len());
        }
        Ok(())
    })
}

/// # Safety
/// `translations` NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_score(translations: *const automoe_translations, index: usize) -> f64 {
    // SAFETY: forwarded from this function's contract.
    unsafe { automoe_translations_nbest_score(translations, index, 0) }
}

/// # Safety
/// `translations` NULL or a live result.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_nbest_score(translations: *const automoe_translations, index: usize, rank: usize) -> f64 {
    // SAFETY: forwarded from this function's contract.
    unsafe { translations_ref(translations) }.and_then(|t| t.entry(index, rank)).map_or(0.0, |e| e.score)
}

/// # Safety
/// `translations` NULL or a live result, freed once.
#[no_mangle]
pub unsafe extern "C" fn automoe_translations_free(translations: *mut automoe_translations) {
    if !translations.is_null() {
        // SAFETY: the pointer came from Box::into_raw(Box<Translations>) and is freed once.
        drop(unsafe { Box::from_raw(translations as *mut Translations) });
    }
}

#[cfg(test)]
mod tests {
    use super::f32_as_written;

    #[test]
    fn f32_options_are_read_as_written() {
        assert_eq!(f32_as_written(0.6), 0.6);
        assert_eq!(f32_as_written(1.2), 1.2);
        assert_eq!(f32_as_written(0.0), 0.0);
        assert_eq!(f32_as_written(f32::INFINITY), f64::INFINITY);
        assert!(f32_as_written(f32::NAN).is_nan());
        assert_eq!(f32_as_written(1e-30), 1e-30);
    }
}
