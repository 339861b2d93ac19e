//! Model handles: load, free, information.

use std::ffi::{c_char, CString};
use std::path::Path;

use super::boundary::{ffi_call, str_arg, Failure};
use super::header::*;
use crate::data::Tokenizer;
use crate::model::{flop_report, param_report, Routing, SubnetModel, PAPER_SRC_LEN, PAPER_TGT_LEN};
use crate::Device;

/// What an `automoe_model*` points to. Immutable after loading, so shared use from many threads
/// is safe.
pub struct ModelHandle {
    pub model: SubnetModel,
    pub tokenizer: Tokenizer,
    pub device: Device,
    pub info: automoe_model_info,
    pub config_json: String,
}

// The header promises that one model serves many threads at once; this fails to compile if a
// field ever stops being shareable (an Rc or RefCell cache, say).
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<ModelHandle>()
};

impl ModelHandle {
    /// Loads a model directory: `model.safetensors` + `model.json` (a standalone subnet) and
    /// `tokenizer.json`, whose vocabulary must match the model's.
    pub fn load(dir: &Path, device: Device) -> crate::Result<Self> {
        device.check_available()?;
        let (model, tokenizer) = crate::cli::translate::load_model_dir(dir)?;
        let model = model.to_device(device)?;
        let params = param_report(&model.config, model.vocab, model.options.pre_norm, &Routing::Uniform)?;
        let flops = flop_report(&model.config, model.vocab, PAPER_SRC_LEN, PAPER_TGT_LEN, &Routing::Uniform)?;
        let info = automoe_model_info {
            vocab_size: model.vocab,
            total_params: params.total as f64,
            active_params: params.active_per_token,
            gflops: flops.paper_gflops(),
        };
        let config_json = model.config.to_json()?;
        Ok(ModelHandle { model, tokenizer, device, info, config_json })
    }
}

/// Borrows the handle behind a model pointer.
///
/// # Safety
/// `p` must be NULL or a pointer returned by `automoe_model_load` and not yet freed.
pub(crate) unsafe fn model_ref<'a>(p: *const automoe_model, function: &str) -> Result<&'a ModelHandle, Failure> {
    // SAFETY: per the contract, a non-null `p` came from Box::into_raw of a ModelHandle.
    unsafe { (p as *const ModelHandle).as_ref() }.ok_or_else(|| Failure::null("model", function))
}

/// # Safety
/// `options` must be NULL or point to writable memory for one `automoe_decode_options`.
#[no_mangle]
pub unsafe extern "C" fn automoe_decode_options_init(options: *mut automoe_decode_options) {
    if !options.is_null() {
        // SAFETY: non-null and writable per the contract.
        unsafe {
            options.write(automoe_decode_options {
                struct_size: std::mem::size_of::<automoe_decode_options>(),
                beam: 4,
                length_penalty: 0.6,
                max_len_a: 1.2,
                max_len_b: 10,
            })
        };
    }
}

/// # Safety
/// `dir` and `device` must be NULL or NUL-terminated strings; `out_model` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_model_load(
    dir: *const c_char,
    device: *const c_char,
    out_model: *mut *mut automoe_model,
) -> automoe_status {
    ffi_call(|| {
        const F: &str = "automoe_model_load";
        // SAFETY: forwarded from this function's contract.
        let dir = unsafe { str_arg(dir, "dir", F)? };
        if out_model.is_null() {
            return Err(Failure::null("out_model", F));
        }
        if dir.is_empty() {
            return Err(Failure::new(AUTOMOE_INVALID_ARGUMENT, format!("{F}: `dir` is empty")));
        }
        let device: Device = if device.is_null() {
            Device::Cpu
        } else {
            // SAFETY: forwarded from this function's contract.
            unsafe { str_arg(device, "device", F)? }.parse()?
        };
        let handle = ModelHandle::load(Path::new(dir), device)?;
        // SAFETY: out_model is non-null and writable per the contract.
        unsafe { out_model.write(Box::into_raw(Box::new(handle)) as *mut automoe_model) };
        Ok(())
    })
}

/// # Safety
/// `model` must be NULL or a live pointer from `automoe_model_load`, not used by other threads.
#[no_mangle]
pub unsafe extern "C" fn automoe_model_free(model: *mut automoe_model) {
    if !model.is_null() {
        let _ = ffi_call(|| {
            // SAFETY: the pointer came from Box::into_raw(Box<ModelHandle>) and is freed once.
            drop(unsafe { Box::from_raw(model as *mut ModelHandle) });
            Ok(())
        });
    }
}

/// # Safety
/// `model` NULL or live; `out_info` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_model_get_info(model: *const automoe_model, out_info: *mut automoe_model_info) -> automoe_status {
    ffi_call(|| {
        const F: &str = "automoe_model_get_info";
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { model_ref(model, F)? };
        if out_info.is_null() {
            return Err(Failure::null("out_info", F));
        }
        // SAFETY: non-null and writable per the contract.
        unsafe { out_info.write(m.info) };
        Ok(())
    })
}

/// # Safety
/// `model` NULL or live; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn automoe_model_config_json(model: *const automoe_model, out_json: *mut *mut c_char) -> automoe_status {
    ffi_call(|| {
        const F: &str = "automoe_model_config_json";
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { model_ref(model, F)? };
        if out_json.is_null() {
            return Err(Failure::null("out_json", F));
        }
        let s = CString::new(m.config_json.as_str()).map_err(|e| Failure::new(AUTOMOE_INTERNAL, format!("{F}: {e}")))?;
        // SAFETY: non-null and writable per the contract.
        unsafe { out_json.write(s.into_raw()) };
        Ok(())
    })
}

/// # Safety
/// `s` must be NULL or a string returned by this library and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn automoe_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the string came from CString::into_raw in this library and is freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}
