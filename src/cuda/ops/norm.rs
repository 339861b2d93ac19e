//! SKELETON: launchers of cuda/norm.cu (being written).
