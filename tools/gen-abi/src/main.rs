//! `gen-abi <repo root>`: prints the Rust bindings of cuda/abi.h (bindgen, libclang) to stdout.
//! `gen-abi <repo root> ffi`: prints bindgen's reading of the C ABI header ffi/automoe.h, which the
//! crate compiles and type-checks its `extern "C"` exports against (src/capi/header.rs).
//! Structs derive `bytemuck::Pod`/`Zeroable`; abi.h keeps them padding-free, and bindgen's layout
//! tests (kept) make any size or offset drift a compile error.

use bindgen::callbacks::{DeriveInfo, ParseCallbacks, TypeKind};

#[derive(Debug)]
struct PodDerives;

impl ParseCallbacks for PodDerives {
    fn add_derives(&self, info: &DeriveInfo<'_>) -> Vec<String> {
        if info.kind == TypeKind::Struct {
            vec!["bytemuck::Pod".into(), "bytemuck::Zeroable".into()]
        } else {
            vec![]
        }
    }
}

/// The C ABI header as bindgen reads it: every `automoe_*` type, function and constant.
fn ffi_bindings(root: &str) -> bindgen::Bindings {
    let header = format!("{root}/ffi/automoe.h");
    bindgen::Builder::default()
        .header(&header)
        .allowlist_item("automoe_.*|AUTOMOE_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .raw_line("#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]")
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("gen-abi: bindgen failed on {header}: {e}");
            std::process::exit(1)
        })
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    if std::env::args().nth(2).as_deref() == Some("ffi") {
        print!("{}", ffi_bindings(&root));
        return;
    }
    let header = format!("{root}/cuda/abi.h");
    let bindings = bindgen::Builder::default()
        .header(&header)
        .allowlist_type("automoe_dptr|.*Params")
        .allowlist_var("AUTOMOE_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(PodDerives))
        .raw_line("#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, clippy::all)]")
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("gen-abi: bindgen failed on {header}: {e}");
            std::process::exit(1)
        });
    print!("{bindings}");
}
