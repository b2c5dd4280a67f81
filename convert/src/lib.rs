//! Converters to `.tah`.
