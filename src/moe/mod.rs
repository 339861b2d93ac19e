//! The heterogeneous Mixture-of-Experts FFN layer: top-k gating, dispatch (a stable counting sort
//! by expert), permute, grouped variable-width expert FFNs, combine — each a fused tape op with a
//! forward and backward CPU kernel — plus the load-balancing loss and capacity-factor dropping.

pub mod dispatch;
pub mod experts;
pub mod gating;
pub mod layer;
pub mod ops;
pub mod permute;
pub mod reference;
pub mod routing;

pub use dispatch::{Dispatch, DROPPED};
pub use experts::Activation;
pub use layer::{balance_loss, moe_forward, moe_forward_routed, ExpertParams, MoeOptions, MoeOutput, MoeParams, MoeSubnet};
pub use ops::{ExpertVars, Gating};
pub use routing::{ExpertIds, MoeRouting, Segments};
