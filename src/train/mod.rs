//! Training: optimizers, learning-rate schedules, gradient clipping.

pub mod optim;
pub mod schedule;

pub use optim::{clip_grad_norm, Adam, AdamConfig};
pub use schedule::LrSchedule;
