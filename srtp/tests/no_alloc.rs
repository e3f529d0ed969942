//! Sealing and opening allocate nothing on the Rust heap: a counting global allocator
//! sees zero allocations over many `protect_rtp` / `protect_rtcp` / `unprotect_*` calls,
//! for every profile. (`tests/no_alloc_c.rs` counts aws-lc's own C `malloc`s.)
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::System;

use chorus_srtp::SrtpProfile;
use common::{keys, rtcp, rtp};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUNDS: u32 = 2_000;

#[test]
fn seal_and_open_allocate_nothing() {
    for profile in SrtpProfile::ALL {
        // Everything that may allocate happens before the region: keys, contexts, buffers.
        let k = keys(profile);
        let tx = k.tx(false).unwrap();
        let mut rtcp_tx = k.tx(false).unwrap();
        let rx = k.rx(true).unwrap();
        let mut rtcp_rx = k.rx(true).unwrap();
        let (plain, header_len) = rtp(1, 0xabcd, 1, true, 200);
        let plain_rtcp = rtcp(0xabcd);
        let mut buf = [0u8; 1500];
        let mut cbuf = [0u8; 1500];

        let region = Region::new(GLOBAL);
        for i in 0..ROUNDS {
            buf[..plain.len()].copy_from_slice(&plain);
            buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            let n = tx
                .protect_rtp(&mut buf, plain.len(), header_len, i >> 16)
                .unwrap();
            assert_eq!(rx.unprotect_rtp(&mut buf, n, i >> 16).unwrap(), plain.len());

            cbuf[..plain_rtcp.len()].copy_from_slice(&plain_rtcp);
            let n = rtcp_tx.protect_rtcp(&mut cbuf, plain_rtcp.len()).unwrap();
            assert_eq!(
                rtcp_rx.unprotect_rtcp(&mut cbuf, n).unwrap(),
                plain_rtcp.len()
            );

            // The error paths too.
            assert!(rx.unprotect_rtp(&mut buf, 20, 0).is_err());
            assert!(rtcp_rx.unprotect_rtcp(&mut cbuf, n).is_err());
            assert!(tx.protect_rtp(&mut buf[..100], 100, 12, 0).is_err());
        }
        let stats = region.change();
        assert_eq!(
            (
                stats.allocations,
                stats.reallocations,
                stats.bytes_allocated
            ),
            (0, 0, 0),
            "{profile}: {stats:?}"
        );
    }
}
