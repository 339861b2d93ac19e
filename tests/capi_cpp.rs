//! The C/C++ side of the C ABI, compiled and run from `cargo test`: the header alone as C99 and
//! C++17 (included twice, warnings as errors), and `ffi/examples/translate.cpp` linked against the
//! static and the shared library, its output equal to the Rust API's; `tests/cpp/wrapper_ids.cpp`
//! runs the wrapper's pre-tokenised paths the same way.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use automoe::cli::translate::{load_model_dir, nbest_lines, translate_lines, translate_lines_nbest, DecodeArgs, TOKENIZER_FILE};
use automoe::data::{BpeConfig, Tokenizer};
use automoe::model::{ModelOptions, Supernet};
use automoe::DType;
use common::{moe_config, output_with_input, stdout_with_input, tiny_space};

const FLAGS: &[&str] = &["-Wall", "-Wextra", "-Werror", "-pedantic"];

fn ffi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ffi")
}

/// Where cargo put this build's `libautomoe.a` / `.so`: next to the test binary (`target/<profile>/deps`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(dir.join("libautomoe.a").exists() && dir.join("libautomoe.so").exists(), "libautomoe.a/.so not found in {}", dir.display());
    dir
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// g++ compiling the C++17 program `source` into `bin` against the headers; the caller adds
/// the library to link.
fn cxx(source: &Path, bin: &Path) -> Command {
    let mut cmd = Command::new("g++");
    cmd.args(["-std=c++17", "-O1"]).args(FLAGS).arg("-I").arg(ffi_dir()).arg(source).arg("-o").arg(bin);
    cmd
}

/// Builds `source` into `bin` against `libautomoe.so` in `libs` (found at run time by rpath).
fn link_shared(source: &Path, libs: &Path, bin: &Path) {
    run_ok(cxx(source, bin).arg(format!("-L{}", libs.display())).arg("-lautomoe").arg(format!("-Wl,-rpath,{}", libs.display())));
}

#[test]
fn header_compiles_alone_as_c99_and_cpp17() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("t.c");
    std::fs::write(&c, "#include \"automoe.h\"\n#include \"automoe.h\"\nint main(void) { automoe_decode_options o; automoe_decode_options_init(&o); return (int)o.beam - 4; }\n")
        .unwrap();
    run_ok(Command::new("gcc").args(["-std=c99", "-fsyntax-only"]).args(FLAGS).arg("-I").arg(ffi_dir()).arg(&c));
    let cpp = tmp.path().join("t.cpp");
    std::fs::write(&cpp, "#include \"automoe.h\"\n#include \"automoe.h\"\n#include \"automoe.hpp\"\n#include \"automoe.hpp\"\nint main() { return automoe::default_options().beam == 4 ? 0 : 1; }\n")
        .unwrap();
    run_ok(Command::new("g++").args(["-std=c++17", "-fsyntax-only"]).args(FLAGS).arg("-I").arg(ffi_dir()).arg(&cpp));
    // Plain C++17 on the C header alone, too.
    run_ok(Command::new("g++").args(["-std=c++17", "-fsyntax-only", "-x", "c++"]).args(FLAGS).arg(ffi_dir().join("automoe.h")));
}

#[test]
fn example_links_statically_and_dynamically_and_matches_the_rust_api() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let text = ["a man is riding a bike", "two dogs play in the park", "ein mann fährt fahrrad", "zwei hunde spielen im park"];
    let tok = Tokenizer::train(text.iter(), &BpeConfig { vocab_size: 80, min_frequency: 1, limit_alphabet: None }).unwrap();
    let sup = Supernet::new(tiny_space(), tok.vocab_size(), ModelOptions::default(), 9, DType::F32).unwrap();
    sup.extract(&moe_config()).unwrap().save(&model_dir).unwrap();
    tok.save(model_dir.join(TOKENIZER_FILE)).unwrap();

    let input = "a man is riding\n\nzwei hunde spielen\nthe park\n";
    let lines: Vec<String> = input.lines().map(str::to_string).collect();
    let (model, tok) = load_model_dir(&model_dir).unwrap();
    let want = translate_lines(&model.view().unwrap(), &tok, &lines, &DecodeArgs { beam: 3, ..DecodeArgs::default() }).unwrap();
    let want: String = want.iter().map(|l| format!("{l}\n")).collect();
    // The n-best lines `automoe translate --nbest 3 --beam 3` writes.
    let nbest = translate_lines_nbest(&model.view().unwrap(), &tok, &lines, &DecodeArgs { beam: 3, ..DecodeArgs::default() }, 3).unwrap();
    assert!(nbest.iter().any(|n| n.len() > 1), "the test needs sentences with several finished hypotheses: {nbest:?}");
    let want_nbest: String = nbest_lines(&nbest).iter().map(|l| format!("{l}\n")).collect();

    let libs = lib_dir();
    let example = ffi_dir().join("examples/translate.cpp");
    let native = ["-ldl", "-lpthread", "-lm", "-lrt", "-lutil", "-lgcc_s"];
    let static_bin = tmp.path().join("translate_static");
    run_ok(cxx(&example, &static_bin).arg(libs.join("libautomoe.a")).args(native));
    let shared_bin = tmp.path().join("translate_shared");
    link_shared(&example, &libs, &shared_bin);
    for bin in [&static_bin, &shared_bin] {
        for (args, want) in [(&["3"][..], &want), (&["3", "3"][..], &want_nbest)] {
            // cargo's LD_LIBRARY_PATH would put target/<profile>/libautomoe.so, left by an earlier
            // `cargo build` and possibly stale, ahead of the rpath: point it at this build's.
            let got = stdout_with_input(Command::new(bin).arg(&model_dir).args(args).env("LD_LIBRARY_PATH", &libs), input);
            assert_eq!(&got, want, "{} {args:?}", bin.display());
        }
    }
    // The wrapper's pre-tokenised paths and config_json, built the way the example was.
    let ids_bin = tmp.path().join("wrapper_ids");
    link_shared(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cpp/wrapper_ids.cpp"), &libs, &ids_bin);
    // The source ids of each line without its end-of-sentence, which the library appends.
    let id_lines: String = lines
        .iter()
        .map(|l| {
            let ids = if l.is_empty() { vec![] } else { tok.encode(l).unwrap() };
            let words: Vec<String> = ids.iter().take(ids.len().saturating_sub(1)).map(u32::to_string).collect();
            format!("{}\n", words.join(" "))
        })
        .collect();
    let got = stdout_with_input(Command::new(&ids_bin).arg(&model_dir).args(["3", "3"]).env("LD_LIBRARY_PATH", &libs), &id_lines);
    let nul_refusals = "AUTOMOE_INVALID_ARGUMENT: the model directory contains a NUL byte\n\
                        AUTOMOE_INVALID_ARGUMENT: the device name contains a NUL byte\n";
    assert_eq!(got, format!("{want}{want_nbest}config_json object\n{nul_refusals}"));
    // nbest above the beam: the library's error, through the C++ exception.
    let out =
        Command::new(&shared_bin).arg(&model_dir).args(["2", "3"]).env("LD_LIBRARY_PATH", &libs).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTOMOE_INVALID_ARGUMENT") && err.contains("nbest = 3"), "{err}");
    // A sentence holding a NUL byte would reach the library cut short; the wrapper refuses it.
    let out = output_with_input(Command::new(&shared_bin).arg(&model_dir).env("LD_LIBRARY_PATH", &libs), "a man\nis\0riding\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTOMOE_INVALID_ARGUMENT") && err.contains("sentence 1 contains a NUL"), "{err}");
    // A bad model directory: the C++ exception carries the status and message, exit code 1.
    let out = Command::new(&shared_bin).arg(tmp.path().join("nope")).env("LD_LIBRARY_PATH", &libs).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTOMOE_IO") && err.contains("nope"), "{err}");
}
