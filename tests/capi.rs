//! The C ABI called as C would call it: results equal the Rust API's, every bad argument gives the
//! right status and a message, and one model serves four threads at once.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use automoe::capi::header::*;
use automoe::cli::translate::{load_model_dir, translate_lines, translate_lines_nbest, DecodeArgs, TOKENIZER_FILE};
use automoe::data::{BpeConfig, Tokenizer};
use automoe::model::{ModelOptions, Supernet};
use automoe::DType;
use common::{moe_config, tiny_space};

const TEXT: &[&str] = &["a man is riding a bike", "two dogs play in the park", "ein mann fährt fahrrad", "zwei hunde spielen im park"];

fn make_model_dir(dir: &Path) {
    let tok = Tokenizer::train(TEXT.iter(), &BpeConfig { vocab_size: 80, min_frequency: 1, limit_alphabet: None }).unwrap();
    let sup = Supernet::new(tiny_space(), tok.vocab_size(), ModelOptions::default(), 5, DType::F32).unwrap();
    sup.extract(&moe_config()).unwrap().save(dir).unwrap();
    tok.save(dir.join(TOKENIZER_FILE)).unwrap();
}

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(automoe_last_error_message()) }.to_string_lossy().into_owned()
}

fn options() -> automoe_decode_options {
    let mut o = automoe_decode_options::default();
    // SAFETY: a valid, writable options struct.
    unsafe { automoe_decode_options_init(&mut o) };
    assert_eq!(o.struct_size, std::mem::size_of::<automoe_decode_options>());
    o.beam = 3;
    o.max_len_a = 0.0;
    o.max_len_b = 6;
    o
}

fn load(dir: &Path) -> *mut automoe_model {
    load_on(dir, c"cpu")
}

fn load_on(dir: &Path, device: &CStr) -> *mut automoe_model {
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    let mut m = null_mut();
    // SAFETY: valid strings and out-pointer.
    let s = unsafe { automoe_model_load(c.as_ptr(), device.as_ptr(), &mut m) };
    assert_eq!(s, AUTOMOE_OK, "{}", last_error());
    m
}

/// Translates through the C ABI, returning the texts.
fn translate(m: *const automoe_model, lines: &[&str]) -> Result<Vec<String>, (automoe_status, String)> {
    let owned: Vec<CString> = lines.iter().map(|l| CString::new(*l).unwrap()).collect();
    let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    let mut t = null_mut();
    let o = options();
    // SAFETY: valid pointers for the whole call.
    let s = unsafe { automoe_translate(m, ptrs.as_ptr(), ptrs.len(), &o, &mut t) };
    if s != AUTOMOE_OK {
        return Err((s, last_error()));
    }
    // SAFETY: `t` is a live result until freed below.
    let out = unsafe {
        (0..automoe_translations_count(t)).map(|i| CStr::from_ptr(automoe_translations_text(t, i)).to_string_lossy().into_owned()).collect()
    };
    // SAFETY: freed once.
    unsafe { automoe_translations_free(t) };
    Ok(out)
}

#[test]
fn translations_equal_the_rust_api_and_info_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    make_model_dir(tmp.path());
    let m = load(tmp.path());
    let lines = ["a man is riding", "", "zwei hunde spielen", "the park"];
    let got = translate(m, &lines).unwrap();
    let (model, tok) = load_model_dir(tmp.path()).unwrap();
    let args = DecodeArgs { beam: 3, max_len_a: 0.0, max_len_b: 6, batch_size: 32, ..DecodeArgs::default() };
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let want = translate_lines(&model.view().unwrap(), &tok, &owned, &args).unwrap();
    assert_eq!(got, want);
    assert_eq!(got[1], "", "an empty sentence gives an empty translation");

    let mut info = automoe_model_info::default();
    // SAFETY: live model, writable info.
    assert_eq!(unsafe { automoe_model_get_info(m, &mut info) }, AUTOMOE_OK);
    assert_eq!(info.vocab_size, tok.vocab_size());
    assert!(info.total_params > 0.0 && info.active_params > 0.0 && info.active_params <= info.total_params && info.gflops > 0.0);
    let mut json = null_mut();
    // SAFETY: live model, writable out-pointer; the string is freed with the library's free.
    unsafe {
        assert_eq!(automoe_model_config_json(m, &mut json), AUTOMOE_OK);
        let cfg: serde_json::Value = serde_json::from_str(CStr::from_ptr(json).to_str().unwrap()).unwrap();
        assert!(cfg.get("encoder").is_some(), "{cfg}");
        automoe_string_free(json);
    }

    // Pre-tokenised input gives the same result as text.
    let ids: Vec<Vec<u32>> =
        lines.iter().map(|l| if l.is_empty() { vec![] } else { tok.encode(l).unwrap()[..].split_last().unwrap().1.to_vec() }).collect();
    let ptrs: Vec<*const u32> = ids.iter().map(|v| if v.is_empty() { null() } else { v.as_ptr() }).collect();
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let mut t = null_mut();
    let o = options();
    // SAFETY: valid arrays of `ids.len()` entries; the result is read then freed once.
    unsafe {
        assert_eq!(automoe_translate_ids(m, ptrs.as_ptr(), lens.as_ptr(), ids.len(), &o, &mut t), AUTOMOE_OK, "{}", last_error());
        for (i, w) in want.iter().enumerate() {
            assert_eq!(CStr::from_ptr(automoe_translations_text(t, i)).to_str().unwrap(), w);
            let (mut p, mut n) = (null(), 0usize);
            assert_eq!(automoe_translations_ids(t, i, &mut p, &mut n), AUTOMOE_OK);
            // An empty translation is NULL and 0 (the header), never a dangling pointer.
            assert_eq!(p.is_null(), n == 0, "sentence {i}: ids {p:?}, length {n}");
            let got = if n == 0 { &[][..] } else { std::slice::from_raw_parts(p, n) };
            assert_eq!(tok.decode(got).unwrap(), *w);
        }
        assert!(automoe_translations_text(t, 99).is_null());
        let (mut p, mut n) = (null(), 0usize);
        assert_eq!(automoe_translations_ids(t, 99, &mut p, &mut n), AUTOMOE_OUT_OF_RANGE);
        automoe_translations_free(t);
        automoe_model_free(m);
    }
}

/// `automoe_translate_nbest`: each sentence's best translations in order, as the Rust API gives
/// them (texts, ids and scores), rank 0 equal to `automoe_translate`'s; out-of-range ranks and an
/// `nbest` outside 1..=beam are refused.
#[test]
fn nbest_translations_equal_the_rust_api() {
    let tmp = tempfile::tempdir().unwrap();
    make_model_dir(tmp.path());
    let m = load(tmp.path());
    let lines = ["a man is riding", "", "zwei hunde spielen", "the park"];
    let (model, tok) = load_model_dir(tmp.path()).unwrap();
    let args = DecodeArgs { beam: 3, max_len_a: 0.0, max_len_b: 6, batch_size: 32, ..DecodeArgs::default() };
    let owned: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let want = translate_lines_nbest(&model.view().unwrap(), &tok, &owned, &args, 3).unwrap();
    assert!(want.iter().any(|n| n.len() == 3), "the test needs sentences with 3 finished hypotheses: {want:?}");
    let best = translate(m, &lines).unwrap();
    let owned_c: Vec<CString> = lines.iter().map(|l| CString::new(*l).unwrap()).collect();
    let ptrs: Vec<*const c_char> = owned_c.iter().map(|c| c.as_ptr()).collect();
    let o = options();
    let mut t = null_mut();
    // SAFETY: valid pointers for the whole call; the result is read, then freed once.
    unsafe {
        assert_eq!(automoe_translate_nbest(m, ptrs.as_ptr(), ptrs.len(), &o, 3, &mut t), AUTOMOE_OK, "{}", last_error());
        assert_eq!(automoe_translations_count(t), lines.len());
        for (i, hyps) in want.iter().enumerate() {
            assert_eq!(automoe_translations_nbest_count(t, i), hyps.len(), "sentence {i}");
            for (r, (text, score)) in hyps.iter().enumerate() {
                assert_eq!(CStr::from_ptr(automoe_translations_nbest_text(t, i, r)).to_str().unwrap(), text, "sentence {i} rank {r}");
                assert_eq!(automoe_translations_nbest_score(t, i, r), *score, "sentence {i} rank {r}");
                let (mut p, mut n) = (null(), 0usize);
                assert_eq!(automoe_translations_nbest_ids(t, i, r, &mut p, &mut n), AUTOMOE_OK);
                assert_eq!(tok.decode(std::slice::from_raw_parts(p, n)).unwrap(), *text);
            }
            assert!(hyps.windows(2).all(|w| w[0].1 >= w[1].1), "sentence {i}: best first");
            assert_eq!(CStr::from_ptr(automoe_translations_text(t, i)).to_str().unwrap(), best[i], "rank 0 is the 1-best");
            let r = hyps.len();
            assert!(automoe_translations_nbest_text(t, i, r).is_null());
            let (mut p, mut n) = (null(), 0usize);
            assert_eq!(automoe_translations_nbest_ids(t, i, r, &mut p, &mut n), AUTOMOE_OUT_OF_RANGE);
            assert!(last_error().contains(&format!("rank {r} but sentence {i} has {r} translations")), "{}", last_error());
        }
        assert_eq!(automoe_translations_nbest_count(t, 99), 0);
        assert_eq!(automoe_translations_nbest_count(null(), 0), 0);
        automoe_translations_free(t);
        for bad in [0, 4] {
            let mut t = null_mut();
            assert_eq!(automoe_translate_nbest(m, ptrs.as_ptr(), ptrs.len(), &o, bad, &mut t), AUTOMOE_INVALID_ARGUMENT);
            assert!(last_error().contains(&format!("nbest = {bad} must be 1 to the beam size (3)")), "{}", last_error());
            assert!(t.is_null(), "no result on failure");
        }
        assert_eq!(automoe_translate_nbest(m, ptrs.as_ptr(), ptrs.len(), &o, 2, null_mut()), AUTOMOE_NULL_ARGUMENT);

        // Pre-tokenised input: the same n-best lists.
        let ids: Vec<Vec<u32>> =
            lines.iter().map(|l| if l.is_empty() { vec![] } else { tok.encode(l).unwrap()[..].split_last().unwrap().1.to_vec() }).collect();
        let id_ptrs: Vec<*const u32> = ids.iter().map(|v| if v.is_empty() { null() } else { v.as_ptr() }).collect();
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut t = null_mut();
        assert_eq!(
            automoe_translate_ids_nbest(m, id_ptrs.as_ptr(), lens.as_ptr(), ids.len(), &o, 3, &mut t),
            AUTOMOE_OK,
            "{}",
            last_error()
        );
        for (i, hyps) in want.iter().enumerate() {
            assert_eq!(automoe_translations_nbest_count(t, i), hyps.len());
            for (r, (text, score)) in hyps.iter().enumerate() {
                assert_eq!(CStr::from_ptr(automoe_translations_nbest_text(t, i, r)).to_str().unwrap(), text);
                assert_eq!(automoe_translations_nbest_score(t, i, r), *score);
            }
        }
        automoe_translations_free(t);
        let mut t = null_mut();
        assert_eq!(automoe_translate_ids_nbest(m, id_ptrs.as_ptr(), lens.as_ptr(), ids.len(), &o, 9, &mut t), AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error().contains("automoe_translate_ids_nbest: nbest = 9"), "{}", last_error());
        automoe_model_free(m);
    }
}

/// A model loaded onto the CUDA emulator ("emu": the GPU code path without a GPU) translates as
/// the CPU one does.
#[test]
fn a_model_loaded_onto_the_cuda_emulator_translates_like_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    make_model_dir(tmp.path());
    let (cpu, emu) = (load(tmp.path()), load_on(tmp.path(), c"emu"));
    let lines = ["a man is riding", "zwei hunde spielen im park"];
    let want = translate(cpu, &lines).unwrap();
    assert!(want.iter().any(|t| !t.is_empty()), "nothing to compare: {want:?}");
    assert_eq!(translate(emu, &lines).unwrap(), want);
    // SAFETY: each freed once.
    unsafe {
        automoe_model_free(cpu);
        automoe_model_free(emu);
    }
}

#[test]
fn bad_arguments_give_statuses_and_messages() {
    let tmp = tempfile::tempdir().unwrap();
    make_model_dir(tmp.path());
    let m = load(tmp.path());
    let mut out = null_mut();
    let o = options();
    // SAFETY: every call below passes NULLs or valid pointers only; the library must check them.
    unsafe {
        assert_eq!(automoe_model_load(null(), null(), &mut out), AUTOMOE_NULL_ARGUMENT);
        assert!(last_error().contains("`dir`"), "{}", last_error());
        let dir = CString::new(tmp.path().to_str().unwrap()).unwrap();
        assert_eq!(automoe_model_load(dir.as_ptr(), null(), null_mut()), AUTOMOE_NULL_ARGUMENT);
        assert_eq!(automoe_model_load(c"/no/such/model".as_ptr(), null(), &mut out), AUTOMOE_IO);
        assert!(last_error().contains("/no/such/model"), "{}", last_error());
        let empty = tempfile::tempdir().unwrap();
        let e = CString::new(empty.path().to_str().unwrap()).unwrap();
        assert_eq!(automoe_model_load(e.as_ptr(), null(), &mut out), AUTOMOE_FORMAT, "{}", last_error());
        assert_eq!(automoe_model_load(dir.as_ptr(), c"gpu7".as_ptr(), &mut out), AUTOMOE_INVALID_ARGUMENT);
        if automoe::cuda::device_count().unwrap_or(0) == 0 {
            assert_eq!(automoe_model_load(dir.as_ptr(), c"cuda:0".as_ptr(), &mut out), AUTOMOE_NO_DEVICE);
        }
        assert!(out.is_null(), "out-parameters are written only on success");

        let mut t = null_mut();
        assert_eq!(automoe_translate(null(), null(), 0, &o, &mut t), AUTOMOE_NULL_ARGUMENT);
        assert_eq!(automoe_translate(m, null(), 1, &o, &mut t), AUTOMOE_NULL_ARGUMENT);
        let one = [c"x".as_ptr()];
        assert_eq!(automoe_translate(m, one.as_ptr(), 1, &o, null_mut()), AUTOMOE_NULL_ARGUMENT);
        let bad_utf8 = [c"caf\xe9".as_ptr()];
        assert_eq!(automoe_translate(m, bad_utf8.as_ptr(), 1, &o, &mut t), AUTOMOE_INVALID_UTF8);
        assert!(last_error().contains("sentences[0]"), "{}", last_error());
        let with_null = [c"x".as_ptr(), null()];
        assert_eq!(automoe_translate(m, with_null.as_ptr(), 2, &o, &mut t), AUTOMOE_NULL_ARGUMENT);
        assert!(last_error().contains("sentences[1]"), "{}", last_error());
        let zero_beam = automoe_decode_options { beam: 0, ..o };
        assert_eq!(automoe_translate(m, one.as_ptr(), 1, &zero_beam, &mut t), AUTOMOE_INVALID_ARGUMENT);
        // A beam past the limit is refused too: its score buffers would abort the host process.
        let huge_beam = automoe_decode_options { beam: u32::MAX, ..o };
        assert_eq!(automoe_translate(m, one.as_ptr(), 1, &huge_beam, &mut t), AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error().contains("beam 4294967295"), "{}", last_error());
        // Options never initialised (struct_size 0), and options of a newer header (bigger).
        let raw = automoe_decode_options { struct_size: 0, ..o };
        assert_eq!(automoe_translate(m, one.as_ptr(), 1, &raw, &mut t), AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error().contains("automoe_decode_options_init"), "{}", last_error());
        let newer = automoe_decode_options { struct_size: std::mem::size_of::<automoe_decode_options>() + 8, ..o };
        assert_eq!(automoe_translate(m, one.as_ptr(), 1, &newer, &mut t), AUTOMOE_UNSUPPORTED);
        assert!(last_error().contains("newer automoe.h"), "{}", last_error());
        assert!(t.is_null());

        // An empty batch is fine.
        assert_eq!(automoe_translate(m, null(), 0, null(), &mut t), AUTOMOE_OK);
        assert_eq!(automoe_translations_count(t), 0);
        automoe_translations_free(t);

        let ids = [5u32, 100_000];
        let (p, n) = ([ids.as_ptr()], [2usize]);
        let mut t = null_mut();
        assert_eq!(automoe_translate_ids(m, p.as_ptr(), n.as_ptr(), 1, &o, &mut t), AUTOMOE_OUT_OF_RANGE);
        assert!(last_error().contains("100000"), "{}", last_error());
        assert_eq!(automoe_translate_ids(m, null(), n.as_ptr(), 1, &o, &mut t), AUTOMOE_NULL_ARGUMENT);
        // A wild length is refused before anything is read (len + 1 would wrap to 0).
        let wild = [usize::MAX];
        assert_eq!(automoe_translate_ids(m, p.as_ptr(), wild.as_ptr(), 1, &o, &mut t), AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error().contains(&format!("{}", usize::MAX)), "{}", last_error());
        // A sentence longer than the model's positions is refused with its index, in C's terms.
        let long = CString::new(vec!["a man"; 2000].join(" ")).unwrap();
        let sentences = [c"x".as_ptr(), long.as_ptr()];
        assert_eq!(automoe_translate(m, sentences.as_ptr(), 2, &o, &mut t), AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error().contains("sentences[1] has") && !last_error().contains("--truncate"), "{}", last_error());
        assert!(t.is_null());

        let mut info = automoe_model_info::default();
        assert_eq!(automoe_model_get_info(null(), &mut info), AUTOMOE_NULL_ARGUMENT);
        assert_eq!(automoe_model_get_info(m, null_mut()), AUTOMOE_NULL_ARGUMENT);
        assert_eq!(automoe_model_config_json(m, null_mut()), AUTOMOE_NULL_ARGUMENT);
        assert_eq!(automoe_translations_count(null()), 0);
        assert_eq!(automoe_translations_score(null(), 0), 0.0);
        assert_eq!(CStr::from_ptr(automoe_status_name(AUTOMOE_OUT_OF_RANGE)).to_str().unwrap(), "AUTOMOE_OUT_OF_RANGE");
        automoe_model_free(null_mut());
        automoe_translations_free(null_mut());
        automoe_string_free(null_mut());
        automoe_model_free(m);
    }
}

#[test]
fn one_model_serves_four_threads() {
    let tmp = tempfile::tempdir().unwrap();
    make_model_dir(tmp.path());
    let m = load(tmp.path()) as usize; // a plain address crosses threads; the model is immutable
    let lines = ["a man is riding a bike", "two dogs play", "ein mann", "zwei hunde spielen im park"];
    let want = translate(m as *const automoe_model, &lines).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || (0..3).map(|_| translate(m as *const automoe_model, &lines).unwrap()).collect::<Vec<_>>()))
        .collect();
    for h in handles {
        for got in h.join().unwrap() {
            assert_eq!(got, want);
        }
    }
    // SAFETY: all threads have finished; freed once.
    unsafe { automoe_model_free(m as *mut automoe_model) };
}

thread_local! {
    static FAILS_ON_DROP: FailsOnDrop = const { FailsOnDrop };
}

/// Calls the library with bad arguments from a thread-local destructor, as a C++ thread_local
/// owning a model would on thread exit.
struct FailsOnDrop;

impl Drop for FailsOnDrop {
    fn drop(&mut self) {
        let mut out = null_mut();
        // SAFETY: NULLs only; the library must check them.
        let status = unsafe { automoe_model_load(null(), null(), &mut out) };
        assert_eq!(status, AUTOMOE_NULL_ARGUMENT);
        // The message may already be gone with the thread; the pointer must still be a string.
        let _ = last_error();
    }
}

#[test]
fn a_failing_call_during_thread_teardown_returns_its_status() {
    // Without try_with, the last-error slot accessed after its own destruction panics in an
    // extern "C" function, which aborts the whole test process.
    std::thread::spawn(|| {
        // Thread-local destructors run in reverse order of first use: touching FAILS_ON_DROP
        // before the library's LAST_ERROR makes LAST_ERROR go first, so the drop above calls
        // into the library after its last-error slot is gone.
        FAILS_ON_DROP.with(|_| {});
        let mut out = null_mut();
        // SAFETY: NULLs only.
        assert_eq!(unsafe { automoe_model_load(null(), null(), &mut out) }, AUTOMOE_NULL_ARGUMENT);
    })
    .join()
    .unwrap();
}
