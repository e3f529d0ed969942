//! The server side of RFC 6455, as much as protocol v1 needs: the opening handshake
//! on an HTTP/1.1 upgrade, masked client frames in (text, binary, ping, pong, close,
//! fragmented messages), unmasked text and close frames out.
//!
//! Why not tungstenite (through axum): its buffers keep the capacity of the largest
//! frame a connection ever carried — the SDP offer in, the `joined` roster out, ~20 KB
//! per connection for its whole life. Here a connection holds a few hundred bytes
//! between messages: a message is read into a buffer sized for it and given up after,
//! and one larger than the protocol's limit is skipped, never buffered.

use std::io;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 6455 §7.4.1 close codes used here.
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// Buffer kept between messages; anything larger is given back after its message.
const IDLE_BUFFER: usize = 512;

/// Why a handshake was refused (HTTP 400 / 426).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    #[error("not a WebSocket upgrade (Upgrade: websocket, Connection: upgrade)")]
    NotUpgrade,
    #[error("unsupported WebSocket version (only 13)")]
    Version,
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let status = match self {
            HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut r = (status, self.to_string()).into_response();
        if self == HandshakeError::Version {
            r.headers_mut()
                .insert("sec-websocket-version", HeaderValue::from_static("13"));
        }
        r
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// RFC 6455 §4.2: checks the client's opening handshake and returns the 101 answer.
/// The caller then takes the connection with `hyper::upgrade::on`.
pub(crate) fn accept(headers: &HeaderMap) -> Result<Response, HandshakeError> {
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|d| d.len() == 16)
        })
        .ok_or(HandshakeError::Key)?;
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| HandshakeError::Key)?,
    );
    Ok(r)
}

/// What the client sent, one message at a time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    Binary,
    /// A message over the limit: skipped without being buffered.
    TooLarge,
    /// A close frame (its code, if any); the echo is the caller's to send.
    Close(Option<u16>),
}

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The client broke RFC 6455; close with this code.
    #[error("protocol error ({0}): {1}")]
    Protocol(u16, &'static str),
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    /// Bytes of the header itself.
    size: usize,
}

/// A header read from buffered bytes, or how many bytes it needs.
enum Peek {
    Need(usize),
    Ready(Header),
}

/// One WebSocket connection over `S` (the upgraded HTTP connection).
///
/// [`WebSocket::next`] is cancel-safe (the session's `select!` drops it when something
/// else comes first): nothing is consumed before a frame can be handled whole, a skip
/// in progress and a reply not fully written are kept in `self`.
pub(crate) struct WebSocket<S> {
    io: S,
    /// Bytes read and not yet consumed; given back between messages when large.
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Frames queued for the client, written in order.
    out: Vec<u8>,
    /// The text message being assembled from fragments.
    message: Vec<u8>,
    /// Within a fragmented message: its opcode, and whether it is being skipped.
    fragmented: Option<(u8, bool)>,
    /// Payload bytes still to skip, and what to report once done.
    skip: u64,
    after_skip: Option<Incoming>,
    /// Largest message handed to the caller; larger ones are `TooLarge`.
    max_message: usize,
    /// Largest message skipped; larger ones end the connection (close 1009).
    max_skipped: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    pub fn new(io: S, max_message: usize, max_skipped: u64) -> Self {
        WebSocket {
            io,
            buf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            message: Vec::new(),
            fragmented: None,
            skip: 0,
            after_skip: None,
            max_message,
            max_skipped,
        }
    }

    /// Unconsumed bytes.
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads until at least `n` unconsumed bytes are buffered. Cancel-safe: what was
    /// read stays in the buffer. `Ok(false)`: the connection ended.
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.available() < n {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let want = (n - self.buf.len()).max(IDLE_BUFFER);
            self.buf.reserve(want);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn consume(&mut self, n: usize) -> &[u8] {
        let start = self.pos;
        self.pos += n;
        &self.buf[start..start + n]
    }

    /// The unmasked payload of `h`, whose bytes are all buffered.
    fn take_payload(&mut self, h: &Header) -> Vec<u8> {
        self.consume(h.size);
        let mask = h.mask;
        let mut data = self.consume(h.len as usize).to_vec();
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        data
    }

    /// After a message: forget consumed bytes and give back large buffers.
    fn settle(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > IDLE_BUFFER {
                self.buf = Vec::new();
            }
        }
        if self.fragmented.is_none() && self.message.capacity() > 0 {
            self.message = Vec::new();
        }
    }

    /// RFC 6455 §5.2: the next frame's header from buffered bytes, checked.
    fn peek_header(&self) -> Result<Peek, WsError> {
        let b = &self.buf[self.pos..];
        if b.len() < 2 {
            return Ok(Peek::Need(2));
        }
        let (b0, b1) = (b[0], b[1]);
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol(CLOSE_PROTOCOL_ERROR, "reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol(
                CLOSE_PROTOCOL_ERROR,
                "client frames must be masked",
            ));
        }
        let extra = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let size = 2 + extra + 4;
        if b.len() < size {
            return Ok(Peek::Need(size));
        }
        let len = match extra {
            2 => u64::from(u16::from_be_bytes([b[2], b[3]])),
            8 => u64::from_be_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]),
            _ => u64::from(b1 & 0x7f),
        };
        let mask = [b[2 + extra], b[3 + extra], b[4 + extra], b[5 + extra]];
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if opcode >= 8 && (!fin || len > 125) {
            return Err(WsError::Protocol(CLOSE_PROTOCOL_ERROR, "bad control frame"));
        }
        Ok(Peek::Ready(Header {
            fin,
            opcode,
            mask,
            len,
            size,
        }))
    }

    /// The next message; answers pings itself. `Ok(None)`: the connection ended.
    pub async fn next(&mut self) -> Result<Option<Incoming>, WsError> {
        let out = self.next_inner().await;
        if matches!(out, Ok(Some(_))) {
            self.settle();
        }
        out
    }

    async fn next_inner(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            // Pongs queued while reading go out first.
            self.flush_out().await?;
            if self.skip > 0 || self.after_skip.is_some() {
                let n = (self.available() as u64).min(self.skip);
                self.consume(n as usize);
                self.skip -= n;
                if self.skip > 0 {
                    if !self.fill(1).await? {
                        return Ok(None);
                    }
                    continue;
                }
                if let Some(done) = self.after_skip.take() {
                    return Ok(Some(done));
                }
                continue;
            }
            let h = match self.peek_header()? {
                Peek::Ready(h) => h,
                Peek::Need(n) => {
                    if !self.fill(n).await? {
                        return Ok(None);
                    }
                    continue;
                }
            };
            if h.opcode >= 8 {
                // Control frames are small (≤ 125 bytes): read whole.
                if !self.fill(h.size + h.len as usize).await? {
                    return Ok(None);
                }
                let data = self.take_payload(&h);
                match h.opcode {
                    // Ping: answered with the same payload (RFC 6455 §5.5.3).
                    0x9 => self.queue_frame(0xA, &data),
                    0xA => {}
                    0x8 => {
                        let code =
                            (data.len() >= 2).then(|| u16::from_be_bytes([data[0], data[1]]));
                        return Ok(Some(Incoming::Close(code)));
                    }
                    _ => return Err(WsError::Protocol(CLOSE_PROTOCOL_ERROR, "unknown opcode")),
                }
                continue;
            }
            let opcode = match (h.opcode, self.fragmented) {
                (0x0, Some((op, _))) => op,
                (0x1 | 0x2, None) => h.opcode,
                (0x0, None) => {
                    return Err(WsError::Protocol(
                        CLOSE_PROTOCOL_ERROR,
                        "continuation without a message",
                    ))
                }
                (0x1 | 0x2, Some(_)) => {
                    return Err(WsError::Protocol(
                        CLOSE_PROTOCOL_ERROR,
                        "new message inside a fragmented one",
                    ))
                }
                _ => return Err(WsError::Protocol(CLOSE_PROTOCOL_ERROR, "unknown opcode")),
            };
            let total = self.message.len() as u64 + h.len;
            let skipping = self.fragmented.is_some_and(|(_, s)| s)
                || opcode == 0x2
                || total > self.max_message as u64;
            if skipping {
                if total > self.max_skipped {
                    return Err(WsError::Protocol(CLOSE_TOO_BIG, "message too big"));
                }
                self.consume(h.size);
                self.message = Vec::new();
                self.skip = h.len;
                self.fragmented = (!h.fin).then_some((opcode, true));
                self.after_skip = h.fin.then_some(if opcode == 0x2 {
                    Incoming::Binary
                } else {
                    Incoming::TooLarge
                });
                continue;
            }
            if !self.fill(h.size + h.len as usize).await? {
                return Ok(None);
            }
            let data = self.take_payload(&h);
            self.message.extend_from_slice(&data);
            if !h.fin {
                self.fragmented = Some((opcode, false));
                continue;
            }
            self.fragmented = None;
            let bytes = std::mem::take(&mut self.message);
            return match String::from_utf8(bytes) {
                Ok(text) => Ok(Some(Incoming::Text(text))),
                Err(_) => Err(WsError::Protocol(CLOSE_INVALID_DATA, "text is not UTF-8")),
            };
        }
    }

    /// Appends one unmasked frame to the output.
    fn queue_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.out.reserve(payload.len() + 10);
        self.out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => self.out.push(n as u8),
            n if n <= usize::from(u16::MAX) => {
                self.out.push(126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(payload);
    }

    /// Writes what is queued. Cancel-safe: written bytes leave the queue as they go.
    async fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        while !self.out.is_empty() {
            let n = self.io.write(&self.out).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.out.drain(..n);
        }
        if self.out.capacity() > IDLE_BUFFER {
            self.out = Vec::new();
        }
        self.io.flush().await
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.queue_frame(0x1, text.as_bytes());
        self.flush_out().await
    }

    /// A close frame (RFC 6455 §5.5.1), then the end of our side; `None` sends one
    /// without a code (the echo of a close that had none).
    pub async fn send_close(&mut self, close: Option<(u16, &str)>) -> io::Result<()> {
        let mut payload = Vec::new();
        if let Some((code, reason)) = close {
            payload.extend_from_slice(&code.to_be_bytes());
            // Control frames carry at most 125 bytes.
            let reason = reason.as_bytes();
            payload.extend_from_slice(&reason[..reason.len().min(123)]);
        }
        self.queue_frame(0x8, &payload);
        self.flush_out().await?;
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::duplex;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![u8::from(fin) << 7 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    async fn read_all(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut out = vec![0; 4096];
        let n = client.read(&mut out).await.unwrap();
        out.truncate(n);
        out
    }

    #[tokio::test]
    async fn texts_fragments_pings_and_close() {
        let (mut client, server) = duplex(1 << 20);
        let mut ws = WebSocket::new(server, 1000, 100_000);
        let mut input = frame(true, 1, b"hello");
        input.extend(frame(false, 1, b"frag"));
        input.extend(frame(true, 9, b"p"));
        input.extend(frame(true, 0, b"mented"));
        input.extend(frame(true, 2, b"\x00\x01"));
        input.extend(frame(true, 8, &1000u16.to_be_bytes()));
        client.write_all(&input).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap(),
            Some(Incoming::Text("hello".into()))
        );
        assert_eq!(
            ws.next().await.unwrap(),
            Some(Incoming::Text("fragmented".into()))
        );
        // The ping was answered while the fragments were read.
        assert_eq!(read_all(&mut client).await, vec![0x8a, 1, b'p']);
        assert_eq!(ws.next().await.unwrap(), Some(Incoming::Binary));
        assert_eq!(ws.next().await.unwrap(), Some(Incoming::Close(Some(1000))));
        ws.send_text("hi").await.unwrap();
        assert_eq!(read_all(&mut client).await, vec![0x81, 2, b'h', b'i']);
        drop(client);
        assert!(ws.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn large_messages_are_skipped_not_held_and_buffers_shrink() {
        let (mut client, server) = duplex(1 << 20);
        let mut ws = WebSocket::new(server, 1000, 100_000);
        let big = vec![b'a'; 5000];
        let mut input = frame(true, 1, &big);
        input.extend(frame(true, 1, &vec![b'b'; 900]));
        client.write_all(&input).await.unwrap();
        assert_eq!(ws.next().await.unwrap(), Some(Incoming::TooLarge));
        assert_eq!(
            ws.next().await.unwrap(),
            Some(Incoming::Text("b".repeat(900)))
        );
        // Between messages the connection holds no large buffer.
        assert!(ws.buf.capacity() <= IDLE_BUFFER, "{}", ws.buf.capacity());
        assert_eq!(ws.message.capacity(), 0);
        client
            .write_all(&frame(true, 1, &vec![b'c'; 200_000]))
            .await
            .unwrap();
        assert!(matches!(
            ws.next().await,
            Err(WsError::Protocol(CLOSE_TOO_BIG, _))
        ));
    }

    #[tokio::test]
    async fn protocol_violations_are_errors() {
        for (bytes, code) in [
            (vec![0x81, 0x02, b'h', b'i'], CLOSE_PROTOCOL_ERROR), // unmasked
            (vec![0xc1, 0x80, 0, 0, 0, 0], CLOSE_PROTOCOL_ERROR), // RSV1
            (frame(true, 0, b"x"), CLOSE_PROTOCOL_ERROR),         // lone continuation
            (frame(false, 9, b"x"), CLOSE_PROTOCOL_ERROR),        // fragmented ping
            (frame(true, 3, b"x"), CLOSE_PROTOCOL_ERROR),         // reserved opcode
            (frame(true, 1, &[0xff, 0xfe]), CLOSE_INVALID_DATA),  // not UTF-8
        ] {
            let (mut client, server) = duplex(4096);
            let mut ws = WebSocket::new(server, 1000, 100_000);
            client.write_all(&bytes).await.unwrap();
            match ws.next().await {
                Err(WsError::Protocol(c, _)) => assert_eq!(c, code, "{bytes:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_handshake_answers_rfc_6455s_example() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let r = accept(&h).unwrap();
        assert_eq!(r.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            r.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(accept(&h).unwrap_err(), HandshakeError::Version);
        h.remove(header::UPGRADE);
        assert_eq!(accept(&h).unwrap_err(), HandshakeError::NotUpgrade);
    }
}
