//! The C/C++ side of the C ABI, compiled and run from `cargo test`: the header alone as C99 and
//! C++17 (included twice, warnings as errors), and `ffi/examples/translate.cpp` linked against the
//! static and the shared library, its output equal to the Rust API's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use automoe::cli::translate::{load_model_dir, nbest_lines, translate_lines, translate_lines_nbest, DecodeArgs, TOKENIZER_FILE};
use automoe::data::{BpeConfig, Tokenizer};
use automoe::model::{ModelOptions, Supernet};
use automoe::DType;
use common::{moe_config, stdout_with_input, tiny_space};

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
    run_ok(
        Command::new("g++")
            .args(["-std=c++17", "-O1"])
            .args(FLAGS)
            .arg("-I")
            .arg(ffi_dir())
            .arg(&example)
            .arg(libs.join("libautomoe.a"))
            .args(native)
            .arg("-o")
            .arg(&static_bin),
    );
    let shared_bin = tmp.path().join("translate_shared");
    run_ok(
        Command::new("g++")
            .args(["-std=c++17", "-O1"])
            .args(FLAGS)
            .arg("-I")
            .arg(ffi_dir())
            .arg(&example)
            .arg(format!("-L{}", libs.display()))
            .arg("-lautomoe")
            .arg(format!("-Wl,-rpath,{}", libs.display()))
            .arg("-o")
            .arg(&shared_bin),
    );
    for bin in [&static_bin, &shared_bin] {
        for (args, want) in [(&["3"][..], &want), (&["3", "3"][..], &want_nbest)] {
            // cargo's LD_LIBRARY_PATH would put target/<profile>/libautomoe.so, left by an earlier
            // `cargo build` and possibly stale, ahead of the rpath: point it at this build's.
            let got = stdout_with_input(Command::new(bin).arg(&model_dir).args(args).env("LD_LIBRARY_PATH", &libs), input);
            assert_eq!(&got, want, "{} {args:?}", bin.display());
        }
    }
    // nbest above the beam: the library's error, through the C++ exception.
    let out =
        Command::new(&shared_bin).arg(&model_dir).args(["2", "3"]).env("LD_LIBRARY_PATH", &libs).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTOMOE_INVALID_ARGUMENT") && err.contains("nbest = 3"), "{err}");
    // A bad model directory: the C++ exception carries the status and message, exit code 1.
    let out = Command::new(&shared_bin).arg(tmp.path().join("nope")).env("LD_LIBRARY_PATH", &libs).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTOMOE_IO") && err.contains("nope"), "{err}");
}
