//! SKELETON: launchers of cuda/embedding.cu (being written).
