//! The panic boundary, status mapping and the thread-local last error of the C ABI.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::header::*;
use crate::Error;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failure to report to C: a status and a message.
pub(crate) struct Failure {
    pub status: automoe_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: automoe_status, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    pub fn null(arg: &str, function: &str) -> Self {
        Failure::new(AUTOMOE_NULL_ARGUMENT, format!("{function}: `{arg}` is NULL"))
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } => AUTOMOE_IO,
            Error::Format { .. } => AUTOMOE_FORMAT,
            Error::IndexOutOfRange { .. } | Error::RangeOutOfBounds { .. } => AUTOMOE_OUT_OF_RANGE,
            Error::NoCudaDevice { .. } => AUTOMOE_NO_DEVICE,
            Error::Unsupported { .. } => AUTOMOE_UNSUPPORTED,
            Error::InvalidArgument { .. } | Error::ShapeMismatch { .. } | Error::BadReshape { .. } | Error::DimOutOfRange { .. } => {
                AUTOMOE_INVALID_ARGUMENT
            }
            _ => AUTOMOE_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

// Every access uses `try_with`: a call made from another thread-local's destructor (a C++
// thread_local object freeing its model, say) may run after LAST_ERROR is gone, and `with` would
// then panic outside any catch_unwind, which aborts the host process.

/// The last error message of this thread (empty once the thread is tearing down).
pub fn last_error_message() -> String {
    LAST_ERROR.try_with(|m| m.borrow().to_string_lossy().into_owned()).unwrap_or_default()
}

fn set_last_error(msg: &str) {
    // Interior NULs would truncate the C string; replace them rather than lose the message.
    let c = CString::new(msg.replace('\0', "\u{FFFD}")).unwrap_or_default();
    // During thread teardown the message has nowhere to go; the status still tells the caller.
    let _ = LAST_ERROR.try_with(|m| *m.borrow_mut() = c);
}

/// Runs `f`, turning its error or panic into a status and the thread's last error message.
pub(crate) fn ffi_call(f: impl FnOnce() -> Result<(), Failure>) -> automoe_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => AUTOMOE_OK,
        Ok(Err(fail)) => {
            set_last_error(&fail.message);
            fail.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal panic (a bug in automoe, please report it): {what}"));
            AUTOMOE_PANIC
        }
    }
}

/// Borrows a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, arg: &str, function: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(arg, function));
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| Failure::new(AUTOMOE_INVALID_UTF8, format!("{function}: `{arg}` is not valid UTF-8 ({e})")))
}

#[no_mangle]
pub extern "C" fn automoe_version() -> *const c_char {
    static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"",
    };
    VERSION.as_ptr()
}

#[no_mangle]
pub extern "C" fn automoe_last_error_message() -> *const c_char {
    // The pointer stays valid until this thread's next failure replaces the string.
    LAST_ERROR.try_with(|m| m.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

#[no_mangle]
pub extern "C" fn automoe_status_name(status: automoe_status) -> *const c_char {
    let name: &CStr = match status {
        AUTOMOE_OK => c"AUTOMOE_OK",
        AUTOMOE_NULL_ARGUMENT => c"AUTOMOE_NULL_ARGUMENT",
        AUTOMOE_INVALID_ARGUMENT => c"AUTOMOE_INVALID_ARGUMENT",
        AUTOMOE_INVALID_UTF8 => c"AUTOMOE_INVALID_UTF8",
        AUTOMOE_OUT_OF_RANGE => c"AUTOMOE_OUT_OF_RANGE",
        AUTOMOE_IO => c"AUTOMOE_IO",
        AUTOMOE_FORMAT => c"AUTOMOE_FORMAT",
        AUTOMOE_NO_DEVICE => c"AUTOMOE_NO_DEVICE",
        AUTOMOE_UNSUPPORTED => c"AUTOMOE_UNSUPPORTED",
        AUTOMOE_PANIC => c"AUTOMOE_PANIC",
        AUTOMOE_INTERNAL => c"AUTOMOE_INTERNAL",
        _ => c"AUTOMOE_UNKNOWN",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = ffi_call(|| panic!("planted"));
        assert_eq!(status, AUTOMOE_PANIC);
        assert!(last_error_message().contains("planted"));
        let status = ffi_call(|| Err(Failure::from(Error::invalid("x", "bad thing"))));
        assert_eq!(status, AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error_message().contains("bad thing"));
        assert_eq!(ffi_call(|| Ok(())), AUTOMOE_OK);
    }

    #[test]
    fn version_matches_the_header() {
        // SAFETY: automoe_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(automoe_version()) }.to_str().unwrap();
        assert_eq!(v.as_bytes(), &AUTOMOE_VERSION_STRING[..AUTOMOE_VERSION_STRING.len() - 1]);
        assert_eq!(v, format!("{AUTOMOE_VERSION_MAJOR}.{AUTOMOE_VERSION_MINOR}.{AUTOMOE_VERSION_PATCH}"));
    }
}
