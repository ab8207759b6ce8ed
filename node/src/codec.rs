//! Binary encoding of Raft messages, log entries and state machine records.
//!
//! MessagePack (via `rmp-serde`) with named fields: compact, self-describing,
//! and tolerant of fields added in later versions.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes a value; fails only for types serde cannot represent.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// Encodes into an `io::Error`-returning form, as storage traits require.
pub fn encode_io<T: Serialize + ?Sized>(value: &T) -> std::io::Result<Vec<u8>> {
    encode(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decodes into an `io::Error`-returning form, as storage traits require.
pub fn decode_io<T: DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    decode(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
