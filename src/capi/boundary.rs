//! The panic boundary, status mapping and the thread-local last error of the C ABI.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe, PanicHookInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use super::header::*;
use crate::Error;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// Whether this thread is inside `ffi_call`, so a panic here is caught and reported as a status.
    static IN_FFI_CALL: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic caught by `ffi_call` on this thread happened (`file:line`).
    static PANIC_SITE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// How many `ffi_call`s are running on any thread. A panic on one of rayon's worker threads while
/// a C call is in flight is that call's work (the library's CPU kernels run there): rayon hands it
/// to the calling thread, whose `catch_unwind` reports it, so it is kept off stderr too.
static FFI_CALLS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Whether a panic on this thread, now, is one the C boundary reports (so the hook stays quiet).
fn panic_is_reported_at_the_boundary() -> bool {
    IN_FFI_CALL.try_with(Cell::get).unwrap_or(false)
        || (rayon::current_thread_index().is_some() && FFI_CALLS_IN_FLIGHT.load(Ordering::SeqCst) > 0)
}

/// Installs, once per process, a panic hook that keeps panics caught at the C boundary off the
/// host's stderr (the host gets AUTOMOE_PANIC and the message, with the panic's location, from
/// `automoe_last_error_message`; a C program's stderr is its own). Every other panic, and every
/// panic when `RUST_BACKTRACE` is set (someone is debugging), goes to the hook that was installed
/// before, so a Rust host's own hook keeps working.
fn install_boundary_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        let debugging = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if panic_is_reported_at_the_boundary() {
                // On a rayon worker this records the site in the worker's slot, which its caller
                // does not read: such a message has no site (see `ffi_call`).
                let site = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                let _ = PANIC_SITE.try_with(|s| *s.borrow_mut() = site);
                if !debugging {
                    return;
                }
            }
            previous(info)
        }));
    });
}

/// Marks this thread as inside `ffi_call` until dropped (restoring the previous mark, so a nested
/// call does not clear its caller's).
struct InFfiCall(bool);

impl InFfiCall {
    fn enter() -> Self {
        FFI_CALLS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFfiCall(IN_FFI_CALL.try_with(|c| c.replace(true)).unwrap_or(false))
    }
}

impl Drop for InFfiCall {
    fn drop(&mut self) {
        let _ = IN_FFI_CALL.try_with(|c| c.set(self.0));
        FFI_CALLS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
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
    install_boundary_panic_hook();
    let _ = PANIC_SITE.try_with(|s| s.borrow_mut().take());
    let outcome = {
        let _inside = InFfiCall::enter();
        catch_unwind(AssertUnwindSafe(f))
    };
    match outcome {
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
            // A panic on a rayon worker reaches here through resume_unwind, which runs no hook, so
            // only panics on the calling thread have a site.
            let site = PANIC_SITE.try_with(|s| s.borrow_mut().take()).ok().flatten();
            let at = site.map(|s| format!(" at {s}")).unwrap_or_default();
            set_last_error(&format!("internal panic{at} (a bug in automoe, please report it): {what}"));
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
        let msg = last_error_message();
        assert!(msg.contains("planted"), "{msg}");
        // The boundary's hook saw the panic (and kept it off stderr): the message has its site.
        assert!(msg.contains(&format!("at {}:", file!())), "{msg}");
        // A panic outside any ffi_call still goes to the previous hook and leaves no site behind.
        assert!(std::panic::catch_unwind(|| panic!("outside")).is_err());
        let status = ffi_call(|| std::panic::panic_any(7u32));
        assert_eq!(status, AUTOMOE_PANIC);
        assert!(last_error_message().contains("unknown panic"), "{}", last_error_message());
        let status = ffi_call(|| Err(Failure::from(Error::invalid("x", "bad thing"))));
        assert_eq!(status, AUTOMOE_INVALID_ARGUMENT);
        assert!(last_error_message().contains("bad thing"));
        assert_eq!(ffi_call(|| Ok(())), AUTOMOE_OK);
    }

    #[test]
    fn a_panic_on_a_rayon_worker_during_a_call_is_reported_not_printed() {
        // Rayon work started from a thread outside its pool runs on the pool's workers.
        let mut on_workers = (false, false);
        let status = ffi_call(|| {
            on_workers = rayon::join(
                || rayon::current_thread_index().is_some() && panic_is_reported_at_the_boundary(),
                || rayon::current_thread_index().is_some() && panic_is_reported_at_the_boundary(),
            );
            Ok(())
        });
        assert_eq!(status, AUTOMOE_OK);
        assert_eq!(on_workers, (true, true), "a worker's panic during a C call would reach stderr");
        // The panic itself comes back to the caller as a status.
        let status = ffi_call(|| {
            use rayon::prelude::*;
            (0..64).into_par_iter().for_each(|i| assert!(i != 40, "planted on a worker"));
            Ok(())
        });
        assert_eq!(status, AUTOMOE_PANIC);
        assert!(last_error_message().contains("planted on a worker"), "{}", last_error_message());
    }

    #[test]
    fn version_matches_the_header() {
        // SAFETY: automoe_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(automoe_version()) }.to_str().unwrap();
        assert_eq!(v.as_bytes(), &AUTOMOE_VERSION_STRING[..AUTOMOE_VERSION_STRING.len() - 1]);
        assert_eq!(v, format!("{AUTOMOE_VERSION_MAJOR}.{AUTOMOE_VERSION_MINOR}.{AUTOMOE_VERSION_PATCH}"));
    }
}
