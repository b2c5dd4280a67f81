//! Converters to `.tah`.

pub mod pickle;
pub mod tah_config;
pub mod torchzip;
