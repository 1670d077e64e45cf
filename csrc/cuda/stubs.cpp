// Built when CUDA is off: every GPU entry point exists and raises an error that says how to rebuild.
// (Owned by the CUDA work; see csrc/cuda/.)
