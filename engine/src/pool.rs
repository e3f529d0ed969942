//! A shard's pool of datagram buffers.
//!
//! Every datagram the shard writes itself (a forwarded copy, a sender report) is
//! built in a buffer taken from here, travels in a [`crate::Transmit`] to the driver,
//! and comes back through [`crate::Shard::recycle`] once `sendmmsg` is done with it. In
//! steady state a forwarded copy allocates nothing.

/// Room for the largest datagram a shard writes (WebRTC keeps to ~1,200 bytes; SRTP
/// adds at most 16).
pub const BUFFER_CAPACITY: usize = 1500;
/// Buffers kept at most; more are freed (after a burst, or by a driver that sends
/// many at once and returns them all).
const MAX_POOLED: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
}

impl BufferPool {
    /// An empty buffer with [`BUFFER_CAPACITY`] bytes of room.
    pub fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
    }

    /// Takes a buffer back (cleared). One that has shrunk below the capacity, or
    /// beyond what the pool keeps, is freed.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() >= BUFFER_CAPACITY && self.free.len() < MAX_POOLED {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers waiting to be used.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_cleared_and_small_ones_are_dropped() {
        let mut pool = BufferPool::default();
        let mut a = pool.take();
        assert!(a.capacity() >= BUFFER_CAPACITY);
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation is reused");
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.len(), 0);
    }
}
