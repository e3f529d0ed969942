//! Sending many small datagrams to many destinations, as a voice SFU does: 32 packets of
//! 120 bytes to 32 different loopback sockets, one `send_to` each against one
//! `sendmmsg` for all (`chorus_engine::socket::SendBatch`), per datagram.
//!
//! GSO (`UDP_SEGMENT`) is not measured: the kernel only segments a buffer into
//! datagrams for one destination, and a speaker's copies go to as many destinations as
//! it has listeners, so it does not apply to fan-out.
//!
//! ```sh
//! cargo bench -p chorus-benches --bench socket -- --warm-up-time 1 --measurement-time 3
//! ```

use std::net::UdpSocket;

use chorus_engine::socket::SendBatch;
use chorus_engine::{Protocol, Transmit};
use criterion::{Criterion, Throughput};

const DESTINATIONS: usize = 32;

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sinks: Vec<UdpSocket> = (0..DESTINATIONS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let transmits: Vec<Transmit> = sinks
        .iter()
        .map(|s| Transmit {
            proto: Protocol::Udp,
            source: sender.local_addr().expect("addr"),
            destination: s.local_addr().expect("addr"),
            contents: vec![0x80; 120],
        })
        .collect();
    // Keep the receivers' buffers from filling (a full buffer drops, which is cheaper
    // and would flatter both).
    let drain = |sinks: &[UdpSocket]| {
        let mut buf = [0u8; 256];
        for s in sinks {
            while s.recv(&mut buf).is_ok() {}
        }
    };
    let mut group = c.benchmark_group("send_32_destinations");
    group.throughput(Throughput::Elements(DESTINATIONS as u64));
    group.bench_function("send_to", |b| {
        b.iter(|| {
            for t in &transmits {
                let _ = sender.send_to(&t.contents, t.destination);
            }
            drain(&sinks);
        })
    });
    let mut batch = SendBatch::default();
    group.bench_function("sendmmsg", |b| {
        b.iter(|| {
            batch.send(&sender, &transmits);
            drain(&sinks);
        })
    });
    group.bench_function("receive_only", |b| {
        // The receivers' share, to subtract: loopback delivery runs in the sender's
        // syscall, draining is the same in both.
        b.iter(|| drain(&sinks))
    });
    group.finish();
    c.final_summary();
}
