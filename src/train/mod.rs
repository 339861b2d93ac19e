//! Training: optimizers, learning-rate schedules, gradient clipping, the model-agnostic training
//! loop and checkpoints.

pub mod average;
pub mod checkpoint;
mod log;
pub mod mt;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use average::{average_weight_files, WeightAveraging};
pub use checkpoint::{
    load_checkpoint, load_weights, read_checkpoint_meta, resolve_checkpoint_dir, save_checkpoint, save_weights, write_dir_atomic,
    CheckpointMeta,
};
pub use log::LogLine;
pub use optim::{clip_grad_norm, Adam, AdamConfig, AdamState};
pub use schedule::LrSchedule;
pub use trainer::{Metrics, TrainConfig, TrainReport, Trainer, UpdateCtx, UpdateRecord};
