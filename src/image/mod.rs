//! Images: decoding files into 8-bit RGB pixels, and resampling them.

pub mod cv;
pub mod decode;
pub mod resample;
