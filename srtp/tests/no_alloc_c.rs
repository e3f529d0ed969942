//! aws-lc's C code allocates through `OPENSSL_malloc`, which a Rust global allocator does
//! not see. This binary routes it through counting hooks (`CRYPTO_set_mem_functions`,
//! forwarding to libc) and checks that sealing and opening call it zero times, for every
//! profile. A canary (an X25519 key, which does `malloc`) proves the hooks are live.
//!
//! The hooks must be installed before aws-lc allocates anything, so this binary holds a
//! single test.
#![allow(unsafe_code)] // FFI: installing and implementing the C allocation hooks.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::agreement::{PrivateKey, X25519};
use chorus_srtp::SrtpProfile;
use common::{keys, rtcp, rtp};

static C_ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn counting_malloc(
    size: usize,
    _file: *const c_char,
    _line: c_int,
) -> *mut c_void {
    C_ALLOCS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain libc malloc; aws-lc frees it through `counting_free` below.
    unsafe { libc::malloc(size) }
}

unsafe extern "C" fn counting_realloc(
    ptr: *mut c_void,
    size: usize,
    _file: *const c_char,
    _line: c_int,
) -> *mut c_void {
    C_ALLOCS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `ptr` is null or came from `counting_malloc` / `counting_realloc`.
    unsafe { libc::realloc(ptr, size) }
}

unsafe extern "C" fn counting_free(ptr: *mut c_void, _file: *const c_char, _line: c_int) {
    // SAFETY: `ptr` came from `counting_malloc` / `counting_realloc` (aws-lc checks null).
    unsafe { libc::free(ptr) }
}

#[test]
fn aws_lc_mallocs_nothing_while_sealing_and_opening() {
    // SAFETY: called once, first thing in the only test of this binary, before aws-lc has
    // allocated anything; the hooks are valid for the life of the process.
    let installed = unsafe {
        aws_lc_sys::CRYPTO_set_mem_functions(
            Some(counting_malloc),
            Some(counting_realloc),
            Some(counting_free),
        )
    };
    assert_eq!(installed, 1, "hooks installed before any aws-lc allocation");

    // Canary: generating an EVP_PKEY mallocs, so the hooks do count.
    let before = C_ALLOCS.load(Ordering::Relaxed);
    let canary = PrivateKey::generate(&X25519).unwrap();
    assert!(
        C_ALLOCS.load(Ordering::Relaxed) > before,
        "hooks see aws-lc's mallocs"
    );
    drop(canary);

    for profile in SrtpProfile::ALL {
        let k = keys(profile);
        let tx = k.tx(false).unwrap();
        let mut rtcp_tx = k.tx(false).unwrap();
        let rx = k.rx(true).unwrap();
        let mut rtcp_rx = k.rx(true).unwrap();
        let (plain, header_len) = rtp(1, 0xabcd, 1, true, 200);
        let plain_rtcp = rtcp(0xabcd);
        let mut buf = [0u8; 1500];
        let mut cbuf = [0u8; 1500];

        let before = C_ALLOCS.load(Ordering::Relaxed);
        for i in 0..1_000u32 {
            buf[..plain.len()].copy_from_slice(&plain);
            buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            let n = tx
                .protect_rtp(&mut buf, plain.len(), header_len, 0)
                .unwrap();
            assert_eq!(rx.unprotect_rtp(&mut buf, n, 0).unwrap(), plain.len());
            cbuf[..plain_rtcp.len()].copy_from_slice(&plain_rtcp);
            let n = rtcp_tx.protect_rtcp(&mut cbuf, plain_rtcp.len()).unwrap();
            assert_eq!(
                rtcp_rx.unprotect_rtcp(&mut cbuf, n).unwrap(),
                plain_rtcp.len()
            );
            assert!(rx.unprotect_rtp(&mut buf, n, 1).is_err());
        }
        assert_eq!(
            C_ALLOCS.load(Ordering::Relaxed) - before,
            0,
            "{profile}: C mallocs"
        );
    }
}
