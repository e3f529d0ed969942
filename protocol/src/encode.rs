//! The [`Encode`] trait shared by every packet writer in this crate.
//!
//! Writers are plain structs of borrowed inputs. They compute their exact length first,
//! so writing into a caller's slice either fits or fails without touching the buffer,
//! and appending to a `Vec` grows it once. Compound RTCP is written by encoding several
//! packets one after another into the same `Vec`.

use crate::error::WriteError;

/// A packet that can be written to the wire.
pub trait Encode {
    /// The exact number of bytes [`Encode::encode`] writes, or why the inputs are invalid.
    fn encoded_len(&self) -> Result<usize, WriteError>;

    /// Writes the packet at the start of `buf`; returns the number of bytes written.
    fn encode(&self, buf: &mut [u8]) -> Result<usize, WriteError>;

    /// Appends the packet to `out`; returns the number of bytes appended.
    fn encode_vec(&self, out: &mut Vec<u8>) -> Result<usize, WriteError> {
        let len = self.encoded_len()?;
        let start = out.len();
        out.resize(start + len, 0);
        let written = self.encode(&mut out[start..]);
        // On error leave `out` as it was.
        out.truncate(start + written.unwrap_or(0));
        written
    }
}
