//! Converters to `.tah`.

pub mod torchzip;
