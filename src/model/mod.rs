//! The heterogeneous MoE Transformer supernet (AutoMoE): the search space and subnet configs
//! (`space`), where the weights live (`params`), the layers and the forward pass (`layers`,
//! `transformer`), incremental decoding (`incremental`), the supernet and extracted standalone models (`supernet`), and parameter /
//! FLOP counts (`cost`). See `docs/ARCHITECTURE.md` ("The model").

pub mod cost;
pub mod incremental;
pub mod layers;
pub mod params;
pub mod space;
pub mod supernet;
pub mod transformer;

pub use cost::{flop_report, param_report, FlopReport, ParamReport, Routing, SubnetCost, PAPER_SRC_LEN, PAPER_TGT_LEN};
pub use incremental::{DecoderState, EncoderOutput, ModelView, SourceBatch};
pub use layers::{cross_attention_memory, sinusoidal_positions, FlopCount, LayerRouting};
pub use params::NetParams;
pub use space::{
    check_vocab, space_difference, span_layers, DecoderLayerConfig, EncoderLayerConfig, SearchSpace, SubnetConfig, MAX_VOCAB_SIZE,
};
pub use supernet::{SubnetModel, Supernet};
pub use transformer::{Batch, FfnActivation, ModelOptions, ModelOutput, PassRouting, RunMode};
