//! Converters to `.tah`.

pub mod pickle;
pub mod torchzip;
