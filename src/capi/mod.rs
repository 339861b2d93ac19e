//! The C ABI (`ffi/automoe.h`): opaque handles, stable status codes, out-parameters written only
//! on success, every pointer checked, every entry point behind a panic boundary, and a
//! thread-local last-error message.
//!
//! `header.rs` is bindgen's reading of `ffi/automoe.h` (regenerated and diffed by
//! `scripts/gen-abi.sh --check`). The exports use its types, and `tests` below coerce every export
//! to the type bindgen declares: a signature that drifts from the header fails to compile.

mod boundary;
#[rustfmt::skip]
pub mod header;
mod model;
mod translate;

pub use boundary::last_error_message;
pub use model::ModelHandle;

#[cfg(test)]
mod tests {
    use super::header as h;

    /// Both arguments must have the same type.
    fn same<T>(_: T, _: T) {}

    #[test]
    fn exports_match_the_header() {
        same(h::automoe_version as unsafe extern "C" fn() -> _, super::boundary::automoe_version as unsafe extern "C" fn() -> _);
        same(
            h::automoe_last_error_message as unsafe extern "C" fn() -> _,
            super::boundary::automoe_last_error_message as unsafe extern "C" fn() -> _,
        );
        same(h::automoe_status_name as unsafe extern "C" fn(_) -> _, super::boundary::automoe_status_name as unsafe extern "C" fn(_) -> _);
        same(
            h::automoe_decode_options_init as unsafe extern "C" fn(_),
            super::model::automoe_decode_options_init as unsafe extern "C" fn(_),
        );
        same(
            h::automoe_model_load as unsafe extern "C" fn(_, _, _) -> _,
            super::model::automoe_model_load as unsafe extern "C" fn(_, _, _) -> _,
        );
        same(h::automoe_model_free as unsafe extern "C" fn(_), super::model::automoe_model_free as unsafe extern "C" fn(_));
        same(
            h::automoe_model_get_info as unsafe extern "C" fn(_, _) -> _,
            super::model::automoe_model_get_info as unsafe extern "C" fn(_, _) -> _,
        );
        same(
            h::automoe_model_config_json as unsafe extern "C" fn(_, _) -> _,
            super::model::automoe_model_config_json as unsafe extern "C" fn(_, _) -> _,
        );
        same(h::automoe_string_free as unsafe extern "C" fn(_), super::model::automoe_string_free as unsafe extern "C" fn(_));
        same(
            h::automoe_translate as unsafe extern "C" fn(_, _, _, _, _) -> _,
            super::translate::automoe_translate as unsafe extern "C" fn(_, _, _, _, _) -> _,
        );
        same(
            h::automoe_translate_ids as unsafe extern "C" fn(_, _, _, _, _, _) -> _,
            super::translate::automoe_translate_ids as unsafe extern "C" fn(_, _, _, _, _, _) -> _,
        );
        same(
            h::automoe_translations_count as unsafe extern "C" fn(_) -> _,
            super::translate::automoe_translations_count as unsafe extern "C" fn(_) -> _,
        );
        same(
            h::automoe_translations_text as unsafe extern "C" fn(_, _) -> _,
            super::translate::automoe_translations_text as unsafe extern "C" fn(_, _) -> _,
        );
        same(
            h::automoe_translations_ids as unsafe extern "C" fn(_, _, _, _) -> _,
            super::translate::automoe_translations_ids as unsafe extern "C" fn(_, _, _, _) -> _,
        );
        same(
            h::automoe_translations_score as unsafe extern "C" fn(_, _) -> _,
            super::translate::automoe_translations_score as unsafe extern "C" fn(_, _) -> _,
        );
        same(
            h::automoe_translate_nbest as unsafe extern "C" fn(_, _, _, _, _, _) -> _,
            super::translate::automoe_translate_nbest as unsafe extern "C" fn(_, _, _, _, _, _) -> _,
        );
        same(
            h::automoe_translate_ids_nbest as unsafe extern "C" fn(_, _, _, _, _, _, _) -> _,
            super::translate::automoe_translate_ids_nbest as unsafe extern "C" fn(_, _, _, _, _, _, _) -> _,
        );
        same(
            h::automoe_translations_nbest_count as unsafe extern "C" fn(_, _) -> _,
            super::translate::automoe_translations_nbest_count as unsafe extern "C" fn(_, _) -> _,
        );
        same(
            h::automoe_translations_nbest_text as unsafe extern "C" fn(_, _, _) -> _,
            super::translate::automoe_translations_nbest_text as unsafe extern "C" fn(_, _, _) -> _,
        );
        same(
            h::automoe_translations_nbest_ids as unsafe extern "C" fn(_, _, _, _, _) -> _,
            super::translate::automoe_translations_nbest_ids as unsafe extern "C" fn(_, _, _, _, _) -> _,
        );
        same(
            h::automoe_translations_nbest_score as unsafe extern "C" fn(_, _, _) -> _,
            super::translate::automoe_translations_nbest_score as unsafe extern "C" fn(_, _, _) -> _,
        );
        same(
            h::automoe_translations_free as unsafe extern "C" fn(_),
            super::translate::automoe_translations_free as unsafe extern "C" fn(_),
        );
    }
}
