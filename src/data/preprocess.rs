//! Image decoding and pre-processing identical to the reference pipeline.
