//! Images: decoding files into 8-bit RGB pixels.

pub mod decode;
