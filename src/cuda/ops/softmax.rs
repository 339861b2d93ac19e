//! SKELETON: launchers of cuda/softmax.cu (being written).
