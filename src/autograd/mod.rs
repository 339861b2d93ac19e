//! Reverse-mode automatic differentiation on a tape (a Wengert list), see DESIGN.md "The tape".
//!
//! ```
//! use automoe::autograd::{ParamStore, Tape};
//! use automoe::{DType, Tensor};
//! let mut store = ParamStore::new();
//! let w = store.add("w", Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap()).unwrap();
//! let mut tape = Tape::new();
//! let x = tape.constant(Tensor::ones(&[1, 2], DType::F32));
//! let wv = tape.param(&store, w).unwrap();
//! // Use only the front column of w: its gradient lands in that column of w's gradient.
//! let w0 = tape.front_slice(&wv, &[2, 1]).unwrap();
//! let y = tape.matmul(&x, &w0).unwrap();
//! let loss = tape.sum(&y).unwrap();
//! let grads = tape.backward(&loss).unwrap();
//! store.accumulate(&grads).unwrap();
//! assert_eq!(store.grad(w).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0, 1.0, 0.0]);
//! ```

mod backward;
pub mod gradcheck;
mod ops;
mod params;
mod tape;

pub use ops::LossStats;
pub use params::{Param, ParamId, ParamStore};
pub use tape::{Gradients, Op, Tape, Var};
