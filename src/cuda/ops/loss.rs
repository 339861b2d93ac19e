//! SKELETON: launchers of cuda/loss.cu (being written).
