//! CPU kernels. Each works on row-major slices (or, for matmul, strided views) of f32 or f64, with
//! a plain reference beside it in `reference.rs` for tests. Loops over rows go parallel through
//! rayon once a tensor is big enough that the split pays for itself.

pub mod elementwise;
pub mod embedding;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod reference;
pub mod softmax;

/// Below this many elements a kernel runs on one thread: rayon's split costs more than it saves.
pub const PAR_MIN_ELEMS: usize = 1 << 15;

/// Rows handed to one rayon task so that each task sees at least `PAR_MIN_ELEMS / 4` elements.
pub fn rows_per_task(row_len: usize) -> usize {
    ((PAR_MIN_ELEMS / 4) / row_len.max(1)).max(1)
}
