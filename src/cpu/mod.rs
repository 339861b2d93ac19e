//! CPU kernels. Each works on row-major slices (or, for matmul, strided views) of f32 or f64, with
//! a plain reference beside it in `reference.rs` for tests. Loops over rows go parallel through
//! rayon once a tensor is big enough that the split pays for itself.

pub mod alloc;
pub mod elementwise;
pub mod embedding;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod reference;
pub mod rowmath;
pub mod softmax;
pub mod transpose;

/// Below this many elements a kernel runs on one thread: rayon's split costs more than it saves.
pub const PAR_MIN_ELEMS: usize = 1 << 15;

/// Rows handed to one rayon task so that each task sees at least `PAR_MIN_ELEMS / 4` elements.
pub fn rows_per_task(row_len: usize) -> usize {
    ((PAR_MIN_ELEMS / 4) / row_len.max(1)).max(1)
}

thread_local! {
    /// Per-thread scratch for kernels' temporaries (8-byte aligned words).
    static SCRATCH: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a per-thread scratch buffer of `len` elements whose contents are unspecified
/// (callers write before they read). Kernels that need a few MiB of temporaries per rayon task
/// use it instead of fresh allocations: buffers that size come from `mmap`, and faulting their
/// pages in cost the MoE forward about 10 % of its time. The buffer keeps the largest size asked
/// for on that thread. A nested call on the same thread gets a fresh allocation.
pub fn with_scratch<T: crate::tensor::Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < words {
                buf.resize(words, 0);
            }
            f(&mut bytemuck::cast_slice_mut::<u64, T>(&mut buf[..words])[..len])
        }
        Err(_) => f(&mut vec![T::zero(); len]),
    })
}
