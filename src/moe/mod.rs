//! Mixture-of-Experts building blocks.

pub mod reference;
