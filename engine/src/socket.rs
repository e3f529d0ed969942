//! The UDP socket layer: `SO_REUSEPORT` binding and batched syscalls.
//!
//! This is the only module with `unsafe` (the `recvmmsg`/`sendmmsg` FFI and one
//! `setsockopt`); every block says why it is sound. One [`Batch`] and one
//! [`SendBatch`] per shard thread own the buffers and the `mmsghdr` arrays, so
//! steady-state I/O allocates nothing.
// The workspace denies unsafe code; the syscalls here are the one exception.
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::io::{Datagram, Protocol, Transmit};

/// Datagrams moved per syscall.
pub const BATCH: usize = 32;
/// Largest datagram received (WebRTC keeps to ~1200 bytes; larger is not ours).
pub const MAX_DATAGRAM: usize = 2048;
/// Kernel socket buffers asked for (the kernel may cap them at `net.core.*mem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds `count` non-blocking sockets to one address with `SO_REUSEPORT`, so the
/// kernel spreads flows across them by their 4-tuple hash. Port 0 picks one port for
/// all of them.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let s = Socket::new(
            Domain::for_address(addr),
            Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        dual_stack(&s, addr)?;
        // Best effort: a smaller buffer only means earlier drops under bursts.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        // Best effort too: without it the kernel picks an IP ID per datagram.
        let _ = dont_fragment(&s, addr);
        s.bind(&addr.into())?;
        let udp: UdpSocket = s.into();
        addr = udp.local_addr()?;
        sockets.push(udp);
    }
    Ok(sockets)
}

/// Sets the DF bit on what the socket sends, without following path MTU discovery
/// (`IP_PMTUDISC_PROBE`, as quinn-udp does). WebRTC keeps its datagrams near 1,200
/// bytes, and a fragmented media packet is worse than a lost one: a datagram larger
/// than the interface's MTU is refused by the kernel (counted as a dropped send), one
/// larger than the path's is lost on the way. For IPv4 it also spares the kernel an IP
/// ID per datagram (`__ip_select_ident`: a hash and an atomic on a table shared by
/// every CPU), which it only picks for datagrams that may be fragmented.
fn dont_fragment(s: &Socket, addr: SocketAddr) -> io::Result<()> {
    let fd = s.as_raw_fd();
    let mut set = Ok(());
    if let SocketAddr::V6(a) = addr {
        set = set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
        // A dual-stack socket (or one bound to an IPv4-mapped address) sends IPv4 too.
        if !a.ip().is_unspecified() && a.ip().to_ipv4_mapped().is_none() {
            return set;
        }
    }
    set.and(set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    ))
}

fn set_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size; the kernel
    // only reads it. A bad fd or option is reported as an error, not undefined.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket to bind to `[::]` takes IPv4 too (IPv4-mapped), whatever the system
/// default.
fn dual_stack(s: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        s.set_only_v6(false)?;
    }
    Ok(())
}

/// The ICE-TCP listener on `addr`; `[::]` takes IPv4 too (IPv4-mapped), whatever the
/// system default.
pub fn bind_tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    dual_stack(&s, addr)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The header arrays of one batched syscall: a name (address) slot, an iovec and an
/// `mmsghdr` per message. Kept between calls (nothing is allocated per call). A
/// [`SendBatch`] re-aims the ones it uses at every call; a [`Batch`] keeps its own in
/// one heap block with its buffers and aims them once.
struct MsgHeaders {
    names: [libc::sockaddr_storage; BATCH],
    iovecs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
}

impl Default for MsgHeaders {
    fn default() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain old data (integers and
        // raw pointers); all-zero is a valid value of each, and so of arrays of them.
        unsafe { std::mem::zeroed() }
    }
}

impl MsgHeaders {
    /// Points message `i` at `len` bytes at `base` and at its own name slot, of which
    /// `name_len` bytes count.
    fn aim(&mut self, i: usize, base: *mut libc::c_void, len: usize, name_len: libc::socklen_t) {
        self.iovecs[i] = libc::iovec {
            iov_base: base,
            iov_len: len,
        };
        let h = &mut self.hdrs[i];
        h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = name_len;
        h.msg_hdr.msg_iov = &mut self.iovecs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = std::ptr::null_mut();
        h.msg_hdr.msg_controllen = 0;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
    }
}

/// Buffers for batched receive, with the `recvmmsg` headers that point into them.
///
/// The buffers and the headers share one heap block, so the headers' pointers stay
/// valid wherever the `Batch` moves: they are aimed once, and each call only resets
/// what the kernel wrote into the headers of the datagrams it returned last time
/// (their name lengths). A call that brings one datagram touches one header, not
/// [`BATCH`] of them.
pub struct Batch {
    receive: Box<ReceiveBuffers>,
    lens: [usize; BATCH],
    sources: [Option<SocketAddr>; BATCH],
    /// Datagrams the last call returned (their headers need resetting).
    len: usize,
}

struct ReceiveBuffers {
    bufs: [[u8; MAX_DATAGRAM]; BATCH],
    headers: MsgHeaders,
}

/// Name length given to the kernel for each received datagram's source.
const NAME_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

impl Default for Batch {
    fn default() -> Self {
        let mut receive = Box::new(ReceiveBuffers {
            bufs: [[0u8; MAX_DATAGRAM]; BATCH],
            headers: MsgHeaders::default(),
        });
        let r = &mut *receive;
        for i in 0..BATCH {
            let base = r.bufs[i].as_mut_ptr().cast();
            r.headers.aim(i, base, MAX_DATAGRAM, NAME_LEN);
        }
        Batch {
            receive,
            lens: [0; BATCH],
            sources: [None; BATCH],
            len: 0,
        }
    }
}

impl Batch {
    /// Reads up to [`BATCH`] datagrams with one `recvmmsg`. `Ok(0)` when none wait.
    /// Allocates nothing.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let r = &mut *self.receive;
        // The kernel wrote the name length (and msg_len) of each datagram it returned;
        // the pointers and the iovecs it only read.
        for h in &mut r.headers.hdrs[..self.len] {
            h.msg_hdr.msg_namelen = NAME_LEN;
        }
        self.len = 0;
        // SAFETY: every header points at its own iovec (over its buffer in `bufs`) and
        // its own sockaddr_storage, with their true lengths, all in the heap block
        // `receive`, which is not moved or freed during the call (it was aimed in
        // `default` and never moves with the Batch); the count is the arrays' length.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                r.headers.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = (n as usize).min(BATCH);
        for i in 0..n {
            let h = &r.headers.hdrs[i];
            self.lens[i] = (h.msg_len as usize).min(MAX_DATAGRAM);
            // SAFETY: the kernel wrote msg_namelen bytes of a sockaddr into names[i]
            // for each of the n messages it returned.
            self.sources[i] = unsafe { to_socket_addr(&r.headers.names[i], h.msg_hdr.msg_namelen) };
        }
        self.len = n;
        Ok(n)
    }

    /// The i-th datagram of the last [`Batch::recv`] (source and bytes); `None` for a
    /// source that is not IPv4 or IPv6.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.len {
            return None;
        }
        let source = self.sources[i]?;
        Some((source, &self.receive.bufs[i][..self.lens[i]]))
    }

    /// The first `n` datagrams of the last [`Batch::recv`], as the shard takes them
    /// ([`crate::Shard::handle_batch`]).
    pub fn datagrams(&self, n: usize) -> impl Iterator<Item = Datagram<'_>> {
        (0..n.min(BATCH)).filter_map(move |i| {
            let (source, contents) = self.get(i)?;
            Some(Datagram {
                proto: Protocol::Udp,
                source,
                contents,
            })
        })
    }
}

/// The `sendmmsg` headers, kept between calls so sending allocates nothing.
#[derive(Default)]
pub struct SendBatch {
    headers: MsgHeaders,
    /// The socket is IPv6 (dual-stack when bound to `[::]`): IPv4 destinations are
    /// written as IPv4-mapped IPv6 addresses.
    v6: bool,
}

impl SendBatch {
    /// A batch for sending on a socket bound to `local` (its address family decides
    /// how IPv4 destinations are written).
    pub fn for_local(local: SocketAddr) -> Self {
        SendBatch {
            headers: MsgHeaders::default(),
            v6: local.is_ipv6(),
        }
    }

    /// Sends `transmits` with `sendmmsg`, [`BATCH`] per syscall. Returns how many were
    /// sent; the rest (socket buffer full, or an error) are dropped: a shard never
    /// blocks. Allocates nothing.
    pub fn send(&mut self, socket: &impl AsRawFd, transmits: &[Transmit]) -> usize {
        let mut sent = 0;
        for chunk in transmits.chunks(BATCH) {
            for (i, t) in chunk.iter().enumerate() {
                let destination = match t.destination {
                    SocketAddr::V4(v4) if self.v6 => {
                        SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
                    }
                    other => other,
                };
                let name = SockAddr::from(destination);
                let len = (name.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
                // SAFETY: `name` holds `len` initialized bytes of a sockaddr (at most
                // a sockaddr_storage); names[i] has room for a whole sockaddr_storage;
                // the two do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        name.as_ptr().cast::<u8>(),
                        (&mut self.headers.names[i] as *mut libc::sockaddr_storage).cast::<u8>(),
                        len,
                    );
                }
                let base = t.contents.as_ptr() as *mut libc::c_void;
                self.headers
                    .aim(i, base, t.contents.len(), len as libc::socklen_t);
            }
            let count = chunk.len();
            let mut offset = 0;
            while offset < count {
                // SAFETY: headers [offset, count) point at live iovecs over the
                // transmits' buffers (borrowed for the call) and at live sockaddrs with
                // their lengths; the kernel only reads them (sendmmsg writes msg_len,
                // inside the headers we own).
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        self.headers.hdrs[offset..count].as_mut_ptr(),
                        (count - offset) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Full buffer or a per-destination error (e.g. ICMP unreachable
                    // reported on this socket): skip the message at the head and go on.
                    tracing::trace!(error = %e, "sendmmsg");
                    offset += 1;
                    continue;
                }
                offset += n as usize;
                sent += n as usize;
            }
        }
        sent
    }
}

/// Sends `transmits` with `sendmmsg` (see [`SendBatch::send`]); for callers without
/// a [`SendBatch`] of their own, on a socket that is IPv4 or sends to IPv6 addresses
/// only (a dual-stack socket needs [`SendBatch::for_local`]).
pub fn send_batch(socket: &impl AsRawFd, transmits: &[Transmit]) -> usize {
    SendBatch::default().send(socket, transmits)
}

/// Reads a kernel-written sockaddr.
///
/// # Safety
/// `name` must point at `len` initialized bytes of a `sockaddr`.
unsafe fn to_socket_addr(
    name: *const libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    // SAFETY: the caller promises `name` is initialized for `len` bytes; the family
    // field is first in every sockaddr, and we read each variant only when the length
    // covers it.
    unsafe {
        match i32::from((*name).ss_family) {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                let a = &*(name as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    u32::from_be(a.sin_addr.s_addr).into(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let a = &*(name as *const libc::sockaddr_in6);
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                // An IPv4 peer of a dual-stack socket arrives IPv4-mapped: the node
                // knows it by its IPv4 address (the candidate pair, the limits).
                Some(match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, u16::from_be(a.sin6_port))),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        u16::from_be(a.sin6_port),
                        a.sin6_flowinfo,
                        a.sin6_scope_id,
                    )),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn get_int(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live and `len` is `value`'s size.
        let r = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast::<libc::c_void>(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn media_sockets_set_dont_fragment_for_ipv4_and_ipv6() {
        let v4 = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let fd = v4[0].as_raw_fd();
        assert_eq!(
            get_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE
        );
        let Ok(dual) = bind_reuseport("[::]:0".parse().unwrap(), 1) else {
            return; // no IPv6 on this machine
        };
        let fd = dual[0].as_raw_fd();
        assert_eq!(
            get_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            libc::IPV6_PMTUDISC_PROBE
        );
        assert_eq!(
            get_int(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_PROBE,
            "a dual-stack socket sends IPv4 with DF too"
        );
        let mapped = bind_reuseport("[::ffff:127.0.0.1]:0".parse().unwrap(), 1).unwrap();
        assert_eq!(
            get_int(
                mapped[0].as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER
            ),
            libc::IP_PMTUDISC_PROBE,
            "so does one bound to an IPv4-mapped address"
        );
    }

    #[test]
    fn batches_round_trip_on_reuseport_sockets() {
        let socks = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = socks[0].local_addr().unwrap().port();
        assert_eq!(
            socks[1].local_addr().unwrap().port(),
            port,
            "one port for all"
        );
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        peer.set_nonblocking(true).unwrap();
        let transmits: Vec<Transmit> = (0..40u8)
            .map(|i| Transmit {
                proto: Protocol::Udp,
                source: socks[0].local_addr().unwrap(),
                destination: peer_addr,
                contents: vec![i; 10 + i as usize],
            })
            .collect();
        assert_eq!(send_batch(&socks[0], &transmits), 40);
        let mut got = Vec::new();
        let mut buf = [0u8; 100];
        for _ in 0..1000 {
            match peer.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from.port(), port);
                    got.push(buf[..n].to_vec());
                }
                Err(_) if got.len() == 40 => break,
                Err(_) => std::thread::yield_now(),
            }
        }
        assert_eq!(got.len(), 40);
        assert_eq!(got[39], vec![39; 49]);
        // And back: one flow lands on one of the two sockets; read both.
        for i in 0..5u8 {
            peer.send_to(&[i; 3], socks[0].local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = Batch::default();
        let n: usize = socks.iter().map(|s| batch.recv(s).unwrap()).sum();
        assert_eq!(n, 5);
    }

    /// The headers are aimed once, in the heap block that moves with nothing: a
    /// `Batch` moved between calls still reads every datagram with its own source,
    /// a full batch then a short one, and nothing past what the last call returned.
    #[test]
    fn a_moved_batch_reads_full_and_short_batches_with_their_sources() {
        let socks = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let to = socks[0].local_addr().unwrap();
        let peers: Vec<UdpSocket> = (0..BATCH + 8)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut batches = vec![Batch::default()];
        for round in 0..3u8 {
            for (i, p) in peers.iter().enumerate() {
                p.send_to(&[round, i as u8, 7], to).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            // Moved out of its Vec and back between rounds.
            let mut batch = batches.pop().unwrap();
            let mut seen = 0;
            for expected in [BATCH, 8] {
                let n = batch.recv(&socks[0]).unwrap();
                assert_eq!(n, expected, "round {round}");
                for (j, d) in batch.datagrams(n).enumerate() {
                    let i = seen + j;
                    assert_eq!(d.contents, &[round, i as u8, 7]);
                    assert_eq!(d.source, peers[i].local_addr().unwrap());
                }
                assert!(
                    batch.get(n).is_none(),
                    "nothing past the last call's datagrams"
                );
                seen += n;
            }
            assert_eq!(batch.recv(&socks[0]).unwrap(), 0);
            assert!(batch.get(0).is_none());
            batches.push(batch);
        }
    }
}
