//! The QUIC relay between nodes, over loopback.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_cluster::relay::{NodeIndex, Relay, RelayConfig, RelayEvent};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const SECRET: &[u8] = b"correct horse battery staple";
const WAIT: Duration = Duration::from_secs(5);

fn bind(index: NodeIndex, secret: &[u8]) -> (Relay, Receiver<RelayEvent>) {
    Relay::bind(RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        secret: secret.to_vec(),
        index,
        node_id: format!("node-{index}"),
    })
    .unwrap()
}

/// The next event matching `want`, skipping others; panics after `within`.
async fn next_matching(
    rx: &mut Receiver<RelayEvent>,
    within: Duration,
    what: &str,
    want: impl Fn(&RelayEvent) -> bool,
) -> RelayEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event channel closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn peer_up(rx: &mut Receiver<RelayEvent>, node: NodeIndex) {
    let event = next_matching(
        rx,
        WAIT,
        &format!("PeerUp {node}"),
        |e| matches!(e, RelayEvent::PeerUp { node: n, .. } if *n == node),
    )
    .await;
    match event {
        RelayEvent::PeerUp { node_id, .. } => assert_eq!(node_id, format!("node-{node}")),
        _ => unreachable!(),
    }
}

async fn peer_down(rx: &mut Receiver<RelayEvent>, node: NodeIndex, within: Duration) {
    next_matching(
        rx,
        within,
        &format!("PeerDown {node}"),
        |e| matches!(e, RelayEvent::PeerDown { node: n } if *n == node),
    )
    .await;
}

/// Asserts that no event at all (no PeerUp, Datagram, Message…) arrives for
/// `for_how_long`.
async fn assert_no_delivery(rx: &mut Receiver<RelayEvent>, for_how_long: Duration) {
    if let Ok(Some(event)) = timeout(for_how_long, rx.recv()).await {
        panic!("unexpected event {event:?}");
    }
}

/// Two connected relays, 1 and 2.
async fn pair() -> ((Relay, Receiver<RelayEvent>), (Relay, Receiver<RelayEvent>)) {
    let (a, mut a_rx) = bind(1, SECRET);
    let (b, mut b_rx) = bind(2, SECRET);
    a.ensure_peer(2, b.local_addr());
    peer_up(&mut a_rx, 2).await;
    peer_up(&mut b_rx, 1).await;
    ((a, a_rx), (b, b_rx))
}

async fn exchange_messages(
    from: &Relay,
    from_index: NodeIndex,
    to: &mut Receiver<RelayEvent>,
    to_index: NodeIndex,
    count: usize,
) {
    for i in 0..count {
        let frame = format!("{from_index}->{to_index} #{i}").into_bytes();
        assert!(from.send_message(to_index, frame));
    }
    for i in 0..count {
        let event = next_matching(to, WAIT, "a message", |e| {
            matches!(e, RelayEvent::Message { .. })
        })
        .await;
        match event {
            RelayEvent::Message { from, frame } => {
                assert_eq!(from, from_index);
                assert_eq!(
                    &frame[..],
                    format!("{from_index}->{to_index} #{i}").as_bytes()
                );
            }
            _ => unreachable!(),
        }
    }
}

/// Sends `data` every 20 ms until it arrives (datagrams are unreliable).
async fn exchange_datagram(
    from: &Relay,
    from_index: NodeIndex,
    to: &mut Receiver<RelayEvent>,
    to_index: NodeIndex,
    data: Bytes,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(from.send_datagram(to_index, data.clone()));
        let got = tokio::time::timeout(Duration::from_millis(20), to.recv()).await;
        if let Ok(Some(RelayEvent::Datagram { from, data: got })) = got {
            assert_eq!(from, from_index);
            assert_eq!(got, data);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "datagram never arrived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_connect_and_exchange() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    assert_eq!(a.peers(), vec![2]);
    assert_eq!(b.peers(), vec![1]);

    // Idempotent: no second connection, no second PeerUp.
    a.ensure_peer(2, b.local_addr());
    a.ensure_peer(2, b.local_addr());

    exchange_messages(&a, 1, &mut b_rx, 2, 1000).await;
    exchange_messages(&b, 2, &mut a_rx, 1, 1000).await;

    let big = Bytes::from(vec![0xa5u8; 1100]);
    exchange_datagram(&a, 1, &mut b_rx, 2, big.clone()).await;
    exchange_datagram(&b, 2, &mut a_rx, 1, big).await;
    assert!(
        !a.send_datagram(2, Bytes::from(vec![0u8; 4000])),
        "too large"
    );
    assert!(
        !a.send_datagram(3, Bytes::from_static(b"x")),
        "no such peer"
    );
    assert!(!a.send_message(3, b"x".to_vec()), "no such peer");
    assert!(
        !a.send_message(2, vec![0u8; (1 << 20) + 1]),
        "frame over 1 MiB"
    );

    let sa = a.stats();
    let sb = b.stats();
    assert_eq!(sa.messages_out, 1000);
    assert_eq!(sb.messages_in, 1000);
    assert_eq!(sb.messages_out, 1000);
    assert_eq!(sa.messages_in, 1000);
    assert!(sa.datagrams_out >= 1 && sa.datagrams_in >= 1);
    assert!(sb.datagrams_out >= 1 && sb.datagrams_in >= 1);
    assert!(sa.bytes_out >= 1100 && sb.bytes_in >= 1100);
    assert_eq!(sa.auth_failures + sb.auth_failures, 0);

    // Only one PeerUp each so far: nothing further is pending but datagrams.
    while let Ok(event) = a_rx.try_recv() {
        assert!(matches!(event, RelayEvent::Datagram { .. }), "{event:?}");
    }
    while let Ok(event) = b_rx.try_recv() {
        assert!(matches!(event, RelayEvent::Datagram { .. }), "{event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_arrive_whole() {
    let ((a, _a_rx), (_b, mut b_rx)) = pair().await;
    let frame: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    assert!(a.send_message(2, frame.clone()));
    assert!(a.send_message(2, Vec::new()));
    let event = next_matching(&mut b_rx, WAIT, "big frame", |e| {
        matches!(e, RelayEvent::Message { .. })
    })
    .await;
    match event {
        RelayEvent::Message { frame: got, .. } => assert!(got[..] == frame[..]),
        _ => unreachable!(),
    }
    let event = next_matching(&mut b_rx, WAIT, "empty frame", |e| {
        matches!(e, RelayEvent::Message { .. })
    })
    .await;
    assert!(matches!(event, RelayEvent::Message { frame, .. } if frame.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lower_index_dials() {
    let (a, mut a_rx) = bind(1, SECRET);
    let (b, mut b_rx) = bind(2, SECRET);
    b.ensure_peer(1, a.local_addr());
    b.ensure_peer(2, b.local_addr()); // ourselves: nothing
    assert_no_delivery(&mut a_rx, Duration::from_millis(500)).await;
    assert_no_delivery(&mut b_rx, Duration::from_millis(10)).await;
    assert!(a.peers().is_empty() && b.peers().is_empty());
    assert!(!b.send_message(1, b"early".to_vec()));

    a.ensure_peer(2, b.local_addr());
    peer_up(&mut a_rx, 2).await;
    peer_up(&mut b_rx, 1).await;
    exchange_messages(&b, 2, &mut a_rx, 1, 10).await;
    exchange_datagram(&b, 2, &mut a_rx, 1, Bytes::from_static(b"audio")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_rejected_both_ways() {
    let (good, mut good_rx) = bind(2, SECRET);
    // A lower-index impostor dials the good node.
    let (bad_low, mut bad_low_rx) = bind(1, b"not the secret");
    bad_low.ensure_peer(2, good.local_addr());
    // The good node dials a higher-index impostor.
    let (bad_high, mut bad_high_rx) = bind(3, b"also not the secret");
    good.ensure_peer(3, bad_high.local_addr());

    let deadline = Instant::now() + WAIT;
    while good.stats().auth_failures < 2
        || bad_low.stats().auth_failures < 1
        || bad_high.stats().auth_failures < 1
    {
        assert!(Instant::now() < deadline, "auth failures not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert!(!bad_low.send_datagram(2, Bytes::from_static(b"intruder")));
        assert!(!bad_low.send_message(2, b"intruder".to_vec()));
        assert!(!bad_high.send_datagram(2, Bytes::from_static(b"intruder")));
    }
    assert_no_delivery(&mut good_rx, Duration::from_millis(500)).await;
    assert_no_delivery(&mut bad_low_rx, Duration::from_millis(10)).await;
    assert_no_delivery(&mut bad_high_rx, Duration::from_millis(10)).await;
    assert!(good.peers().is_empty());
    assert!(bad_low.peers().is_empty());
    assert!(bad_high.peers().is_empty());
}

/// A hand-made QUIC client that speaks the ALPN but not the secret: it sends
/// datagrams straight away and a well-formed hello with a forged MAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_intruder_datagrams_are_never_delivered() {
    let (good, mut good_rx) = bind(2, SECRET);

    let endpoint = raw_client();
    let conn = timeout(
        WAIT,
        endpoint.connect(good.local_addr(), "chorus-relay").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    for _ in 0..50 {
        let _ = conn.send_datagram(Bytes::from_static(b"intruder datagram"));
    }
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut hello = Vec::new();
    hello.extend_from_slice(b"CHRL");
    hello.push(1);
    hello.extend_from_slice(&1u16.to_be_bytes());
    hello.extend_from_slice(&5u16.to_be_bytes());
    hello.extend_from_slice(b"thief");
    hello.extend_from_slice(&[7u8; 32]);
    let mut framed = (hello.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&hello);
    send.write_all(&framed).await.unwrap();
    for _ in 0..50 {
        let _ = conn.send_datagram(Bytes::from_static(b"intruder datagram"));
    }

    let closed = timeout(WAIT, conn.closed()).await.unwrap();
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(1));
        }
        other => panic!("unexpected close {other:?}"),
    }
    assert_eq!(good.stats().auth_failures, 1);
    assert_eq!(good.stats().datagrams_in, 0);
    assert_no_delivery(&mut good_rx, Duration::from_millis(300)).await;

    // A client that never says hello is closed after the 3 s hello timeout.
    let silent = timeout(
        WAIT,
        endpoint.connect(good.local_addr(), "chorus-relay").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let _ = silent.send_datagram(Bytes::from_static(b"intruder datagram"));
    timeout(WAIT, silent.closed()).await.unwrap();
    assert_eq!(good.stats().auth_failures, 2);
    assert_no_delivery(&mut good_rx, Duration::from_millis(100)).await;
}

/// A hand-made client that knows the secret and speaks the documented wire format:
/// it authenticates, checks the relay's hello, then announces an oversized frame
/// and is disconnected for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_format_and_oversized_frames() {
    use aws_lc_rs::hmac;

    let (good, mut good_rx) = bind(2, SECRET);
    let endpoint = raw_client();
    let conn = timeout(
        WAIT,
        endpoint.connect(good.local_addr(), "chorus-relay").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, b"chorus relay auth", b"")
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let mac = |role: u8, index: u16| {
        let mut input = b"chorus relay v1".to_vec();
        input.push(role);
        input.extend_from_slice(&index.to_be_bytes());
        input.extend_from_slice(&exporter);
        hmac::sign(&key, &input)
    };

    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut hello = b"CHRL\x01".to_vec();
    hello.extend_from_slice(&1u16.to_be_bytes());
    hello.extend_from_slice(&6u16.to_be_bytes());
    hello.extend_from_slice(b"node-1");
    hello.extend_from_slice(mac(0, 1).as_ref());
    let mut framed = (hello.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&hello);
    send.write_all(&framed).await.unwrap();

    // The relay's hello: magic, version, index 2, its node id, a MAC as acceptor.
    let mut len = [0u8; 4];
    timeout(WAIT, recv.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut theirs = vec![0u8; u32::from_be_bytes(len) as usize];
    timeout(WAIT, recv.read_exact(&mut theirs))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&theirs[..5], b"CHRL\x01");
    assert_eq!(&theirs[5..7], &2u16.to_be_bytes());
    assert_eq!(&theirs[7..9], &6u16.to_be_bytes());
    assert_eq!(&theirs[9..15], b"node-2");
    assert_eq!(&theirs[15..], mac(1, 2).as_ref());

    peer_up(&mut good_rx, 1).await;
    assert_eq!(good.peers(), vec![1]);

    // One good frame, then a header announcing 2 MiB.
    send.write_all(&3u32.to_be_bytes()).await.unwrap();
    send.write_all(b"abc").await.unwrap();
    let event = next_matching(&mut good_rx, WAIT, "message", |e| {
        matches!(e, RelayEvent::Message { .. })
    })
    .await;
    assert!(matches!(event, RelayEvent::Message { from: 1, frame } if &frame[..] == b"abc"));
    send.write_all(&(2u32 << 20).to_be_bytes()).await.unwrap();
    match timeout(WAIT, conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(2));
        }
        other => panic!("unexpected close {other:?}"),
    }
    peer_down(&mut good_rx, 1, WAIT).await;
    assert!(good.peers().is_empty());
    assert_eq!(good.stats().auth_failures, 0);
}

fn raw_client() -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"chorus-relay/1".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_brings_the_peer_down() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    let started = Instant::now();
    b.close();
    peer_down(&mut a_rx, 2, Duration::from_secs(4)).await;
    peer_down(&mut b_rx, 1, Duration::from_secs(4)).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(a.peers().is_empty());
    assert!(b.peers().is_empty());
    assert!(!a.send_message(2, b"gone".to_vec()));
    assert!(!a.send_datagram(2, Bytes::from_static(b"gone")));
    // Once per PeerUp: nothing else about node 2.
    assert_no_delivery(&mut a_rx, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_relay_brings_the_peer_down() {
    let ((_a, mut a_rx), (b, b_rx)) = pair().await;
    drop(b);
    drop(b_rx);
    peer_down(&mut a_rx, 2, Duration::from_secs(4)).await;
}

/// A peer that vanishes without a word (its runtime is torn down, as with kill -9)
/// is declared down by the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_peer_times_out() {
    let (a, mut a_rx) = bind(1, SECRET);
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (b, b_rx) = runtime.block_on(async { bind(2, SECRET) });
        tx.send(b.local_addr()).unwrap();
        kill_rx.recv().unwrap();
        runtime.shutdown_background();
        // The relay outlives its runtime: nothing more is ever sent.
        std::mem::forget(b);
        drop(b_rx);
    });
    let b_addr = rx.recv_timeout(WAIT).unwrap();
    a.ensure_peer(2, b_addr);
    peer_up(&mut a_rx, 2).await;
    let started = Instant::now();
    kill_tx.send(()).unwrap();
    thread.join().unwrap();
    peer_down(&mut a_rx, 2, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(4500), "{elapsed:?}");
    assert!(a.peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_reconnect() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    a.forget_peer(2);
    peer_down(&mut a_rx, 2, WAIT).await;
    peer_down(&mut b_rx, 1, WAIT).await;
    assert!(a.peers().is_empty());
    a.ensure_peer(2, b.local_addr());
    peer_up(&mut a_rx, 2).await;
    peer_up(&mut b_rx, 1).await;
    exchange_messages(&a, 1, &mut b_rx, 2, 10).await;
}

/// Node 1 restarts (a new relay under the same number) while the old connection
/// still stands: node 2 keeps the newer one, with PeerDown before the new PeerUp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_replaces_the_old() {
    let ((old_a, mut old_a_rx), (b, mut b_rx)) = pair().await;
    let (new_a, mut new_a_rx) = bind(1, SECRET);
    new_a.ensure_peer(2, b.local_addr());
    peer_up(&mut new_a_rx, 2).await;
    let event = timeout(WAIT, b_rx.recv()).await.unwrap().unwrap();
    assert!(
        matches!(event, RelayEvent::PeerDown { node: 1 }),
        "{event:?}"
    );
    peer_up(&mut b_rx, 1).await;
    peer_down(&mut old_a_rx, 2, WAIT).await;
    assert!(old_a.peers().is_empty());
    assert_eq!(b.peers(), vec![1]);
    exchange_messages(&b, 2, &mut new_a_rx, 1, 10).await;
    exchange_messages(&new_a, 1, &mut b_rx, 2, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_full_mesh() {
    let mut relays: Vec<(Relay, Receiver<RelayEvent>)> = (1..=3).map(|i| bind(i, SECRET)).collect();
    let addrs: Vec<SocketAddr> = relays.iter().map(|(r, _)| r.local_addr()).collect();
    // Everyone is told about everyone (as from the directory).
    for (relay, _) in &relays {
        for (i, addr) in addrs.iter().enumerate() {
            relay.ensure_peer(i as NodeIndex + 1, *addr);
        }
    }
    for (i, (_, rx)) in relays.iter_mut().enumerate() {
        let me = i as NodeIndex + 1;
        let mut missing: Vec<NodeIndex> = (1..=3).filter(|&n| n != me).collect();
        while !missing.is_empty() {
            let event = next_matching(rx, WAIT, "PeerUp", |e| {
                matches!(e, RelayEvent::PeerUp { .. })
            })
            .await;
            if let RelayEvent::PeerUp { node, node_id } = event {
                assert_eq!(node_id, format!("node-{node}"));
                assert!(missing.contains(&node), "second PeerUp for {node}");
                missing.retain(|&n| n != node);
            }
        }
    }
    for (i, (relay, _)) in relays.iter().enumerate() {
        let me = i as NodeIndex + 1;
        let expected: Vec<NodeIndex> = (1..=3).filter(|&n| n != me).collect();
        assert_eq!(relay.peers(), expected);
    }
    for from in 1..=3u16 {
        for to in (1..=3u16).filter(|&n| n != from) {
            let sender = relays[usize::from(from) - 1].0.clone();
            let rx = &mut relays[usize::from(to) - 1].1;
            exchange_messages(&sender, from, rx, to, 20).await;
            exchange_datagram(&sender, from, rx, to, Bytes::from(vec![from as u8; 600])).await;
        }
    }
}

#[tokio::test]
async fn bad_configs_are_refused() {
    let config = |index: NodeIndex, secret: &[u8]| RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        secret: secret.to_vec(),
        index,
        node_id: "n".into(),
    };
    assert!(Relay::bind(config(1, b"")).is_err());
    assert!(Relay::bind(config(0, SECRET)).is_err());
    assert!(Relay::bind(config(1, SECRET)).is_ok());
}
