//! The connection to a node's control socket: JSON-RPC 2.0, one JSON object per line
//! in both directions (`docs/control.md`).
//!
//! [`Client::request`] sends one request and waits for the answer with the same id.
//! Event notifications that arrive meanwhile are kept (a few thousand at most) for
//! [`Client::notifications`], which then yields every event's `params` until the node
//! closes the connection. Whatever the node sends that is not a well-formed answer or
//! notification becomes [`Error::BadAnswer`], never a panic.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chorus_protocol::control::{Request, RpcError};
use serde_json::Value;

/// Longest line read from the node (a `room.list` of a very busy node stays far below).
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;
/// Most events kept while waiting for an answer; older ones are dropped first.
const MAX_PENDING_EVENTS: usize = 4096;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be connected to (exit code 3).
    #[error("cannot connect to {}: {} ({})", path.display(), connect_reason(source), connect_hint(source))]
    Connect { path: PathBuf, source: io::Error },
    /// The node answered with an error.
    #[error("{}", describe(.0))]
    Rpc(RpcError),
    /// The node sent something that is not a JSON-RPC answer or notification.
    #[error("bad answer from the node: {0}")]
    BadAnswer(String),
    /// The node closed the connection before answering.
    #[error("the node closed the connection before answering")]
    Closed,
    /// No answer in time.
    #[error("no answer from the node within {}s (see --timeout)", .0.as_secs())]
    Timeout(Duration),
    /// Reading or writing the socket failed.
    #[error("control socket: {0}")]
    Io(io::Error),
}

impl Error {
    /// The process exit code for this error: 3 when the node could not be reached, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Connect { .. } => 3,
            _ => 1,
        }
    }
}

fn connect_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such socket".to_owned(),
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "is the socket the node's, and may this user open it?",
        _ => "is the node running with --control?",
    }
}

/// `<message> (<data.name>, code <code>)`, the name falling back to the one the code has.
pub fn describe(e: &RpcError) -> String {
    let name = e
        .data
        .as_ref()
        .and_then(|d| d.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| e.kind().map(|k| k.name().to_owned()));
    match name {
        Some(name) => format!("{} ({name}, code {})", e.message, e.code),
        None => format!("{} (code {})", e.message, e.code),
    }
}

/// One connection to the control socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    timeout: Option<Duration>,
    pending: VecDeque<Value>,
}

impl Client {
    /// Connects to the socket at `path`. Requests wait for their answer at most
    /// `timeout` (`None`: forever).
    pub fn connect(path: &Path, timeout: Option<Duration>) -> Result<Client, Error> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })?;
        let writer = stream.try_clone().map_err(Error::Io)?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            timeout,
            pending: VecDeque::new(),
        })
    }

    /// Calls `method` with `params` (an object) and returns the `result`, or the
    /// node's error as [`Error::Rpc`].
    pub fn request(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, method, params);
        let mut line = serde_json::to_string(&request)
            .map_err(|e| Error::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
                _ => Error::Io(e),
            })?;
        let deadline = self.timeout.map(|t| (t, Instant::now() + t));
        let id = Value::from(id);
        loop {
            let Some(line) = self.read_line(deadline)? else {
                return Err(Error::Closed);
            };
            match classify(&line)? {
                Incoming::Event(params) => {
                    if self.pending.len() == MAX_PENDING_EVENTS {
                        self.pending.pop_front();
                    }
                    self.pending.push_back(params);
                }
                // One request is in flight at a time, so an error without an id (the
                // node could not read ours) is the answer to it.
                Incoming::Response { id: got, outcome } if got == id || got.is_null() => {
                    return outcome
                }
                Incoming::Response { .. } | Incoming::Other => {}
            }
        }
    }

    /// Every event's `params` from now on (and those that came while waiting for an
    /// answer), until the node closes the connection. No timeout applies.
    pub fn notifications(&mut self) -> Notifications<'_> {
        Notifications {
            client: self,
            done: false,
        }
    }

    /// The next non-blank line, `None` at the end of the stream.
    fn read_line(
        &mut self,
        deadline: Option<(Duration, Instant)>,
    ) -> Result<Option<String>, Error> {
        loop {
            let wait = match deadline {
                None => None,
                Some((total, at)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(total));
                    }
                    Some(left)
                }
            };
            self.reader
                .get_ref()
                .set_read_timeout(wait)
                .map_err(Error::Io)?;
            let mut buf = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut buf);
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let total = deadline.map_or(Duration::ZERO, |(t, _)| t);
                    return Err(Error::Timeout(total));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(Error::Io(e)),
            }
            if buf.last() != Some(&b'\n') && buf.len() as u64 >= MAX_LINE_BYTES {
                return Err(Error::BadAnswer(format!(
                    "a line longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            let line = String::from_utf8(buf)
                .map_err(|_| Error::BadAnswer("a line that is not UTF-8".into()))?;
            let line = line.trim();
            if !line.is_empty() {
                return Ok(Some(line.to_owned()));
            }
        }
    }
}

/// The events of a subscribed connection: see [`Client::notifications`].
#[derive(Debug)]
pub struct Notifications<'a> {
    client: &'a mut Client,
    done: bool,
}

impl Iterator for Notifications<'_> {
    type Item = Result<Value, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(params) = self.client.pending.pop_front() {
            return Some(Ok(params));
        }
        while !self.done {
            let line = match self.client.read_line(None) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            match classify(&line) {
                Ok(Incoming::Event(params)) => return Some(Ok(params)),
                Ok(Incoming::Response { .. } | Incoming::Other) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.done = true;
        None
    }
}

/// What one line from the node is.
#[derive(Debug)]
enum Incoming {
    /// An answer: its id and its `result` or `error`.
    Response {
        id: Value,
        outcome: Result<Value, Error>,
    },
    /// An `event` notification's params.
    Event(Value),
    /// A notification of another method: ignored.
    Other,
}

fn classify(line: &str) -> Result<Incoming, Error> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| Error::BadAnswer(format!("not JSON ({e}): {}", excerpt(line))))?;
    let Value::Object(mut obj) = value else {
        return Err(Error::BadAnswer(format!(
            "not a JSON object: {}",
            excerpt(line)
        )));
    };
    if let Some(method) = obj.get("method") {
        if method != "event" {
            return Ok(Incoming::Other);
        }
        return match obj.remove("params") {
            Some(params @ Value::Object(_)) => Ok(Incoming::Event(params)),
            _ => Err(Error::BadAnswer(format!(
                "an event without a params object: {}",
                excerpt(line)
            ))),
        };
    }
    let Some(id) = obj.remove("id") else {
        return Err(Error::BadAnswer(format!(
            "neither an answer nor a notification: {}",
            excerpt(line)
        )));
    };
    match obj.remove("error") {
        None | Some(Value::Null) => {}
        Some(error) => {
            let error: RpcError = serde_json::from_value(error).map_err(|e| {
                Error::BadAnswer(format!("a malformed error ({e}): {}", excerpt(line)))
            })?;
            return Ok(Incoming::Response {
                id,
                outcome: Err(Error::Rpc(error)),
            });
        }
    }
    match obj.remove("result") {
        Some(result) => Ok(Incoming::Response {
            id,
            outcome: Ok(result),
        }),
        None => Err(Error::BadAnswer(format!(
            "an answer with neither result nor error: {}",
            excerpt(line)
        ))),
    }
}

/// The start of a line, for error messages.
fn excerpt(line: &str) -> String {
    const MAX: usize = 120;
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::test_server::{serve, Reply};
    use serde_json::json;

    const T: Option<Duration> = Some(Duration::from_secs(10));

    #[test]
    fn returns_the_result_and_sends_a_well_formed_request() {
        let server = serve(vec![Reply::lines(&[
            r#"{"jsonrpc":"2.0","id":$ID,"result":{"rooms":[]}}"#,
        ])]);
        let mut client = Client::connect(&server.path, T).unwrap();
        let result = client.request("room.list", json!({})).unwrap();
        assert_eq!(result, json!({"rooms": []}));
        let got = server.requests();
        assert_eq!(
            got,
            vec![json!({"jsonrpc":"2.0","id":1,"method":"room.list","params":{}})]
        );
    }

    #[test]
    fn ids_count_up_and_null_results_are_results() {
        let server = serve(vec![
            Reply::lines(&[r#"{"jsonrpc":"2.0","id":$ID,"result":null}"#]),
            Reply::lines(&[r#"{"jsonrpc":"2.0","id":$ID,"result":true}"#]),
        ]);
        let mut client = Client::connect(&server.path, T).unwrap();
        assert_eq!(client.request("a", json!({})).unwrap(), Value::Null);
        assert_eq!(client.request("b", json!({})).unwrap(), json!(true));
        let ids: Vec<Value> = server.requests().iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids, vec![json!(1), json!(2)]);
    }

    #[test]
    fn returns_the_error_with_its_name_and_code() {
        let server = serve(vec![Reply::lines(&[
            r#"{"jsonrpc":"2.0","id":$ID,"error":{"code":-32001,"message":"no room named \"x\"","data":{"name":"room_not_found"}}}"#,
        ])]);
        let mut client = Client::connect(&server.path, T).unwrap();
        let err = client
            .request("room.get", json!({"room": "x"}))
            .unwrap_err();
        assert!(matches!(&err, Error::Rpc(e) if e.code == -32001));
        assert_eq!(
            err.to_string(),
            r#"no room named "x" (room_not_found, code -32001)"#
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn an_error_without_a_name_uses_the_code_s_name() {
        let e = RpcError {
            code: -32005,
            message: "busy".into(),
            data: None,
        };
        assert_eq!(describe(&e), "busy (busy, code -32005)");
        let e = RpcError {
            code: 7,
            message: "odd".into(),
            data: Some(json!("x")),
        };
        assert_eq!(describe(&e), "odd (code 7)");
    }

    #[test]
    fn keeps_notifications_that_come_before_the_answer_and_skips_other_ids() {
        let server = serve(vec![Reply::lines(&[
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"room_closed","room":"g1","reason":"deleted"}}"#,
            r#"{"jsonrpc":"2.0","id":999,"result":"stale"}"#,
            r#"{"jsonrpc":"2.0","method":"something_else","params":{}}"#,
            "",
            r#"{"jsonrpc":"2.0","id":$ID,"result":{"subscribed":true}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"events_lost","count":3}}"#,
        ])]);
        let mut client = Client::connect(&server.path, T).unwrap();
        let result = client.request("events.subscribe", json!({})).unwrap();
        assert_eq!(result, json!({"subscribed": true}));
        let events: Vec<Value> = client.notifications().map(Result::unwrap).collect();
        assert_eq!(
            events,
            vec![
                json!({"type":"room_closed","room":"g1","reason":"deleted"}),
                json!({"type":"events_lost","count":3}),
            ]
        );
    }

    #[test]
    fn an_error_for_an_unreadable_request_has_a_null_id() {
        let server = serve(vec![Reply::lines(&[
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"not JSON"}}"#,
        ])]);
        let mut client = Client::connect(&server.path, T).unwrap();
        let err = client.request("room.list", json!({})).unwrap_err();
        assert_eq!(err.to_string(), "not JSON (parse_error, code -32700)");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [
            "this is not json",
            "[1,2,3]",
            r#"{"jsonrpc":"2.0","id":$ID}"#,
            r#"{"jsonrpc":"2.0","id":$ID,"error":{"message":"no code"}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":[1]}"#,
            r#"{"hello":"world"}"#,
        ] {
            let server = serve(vec![Reply::lines(&[garbage])]);
            let mut client = Client::connect(&server.path, T).unwrap();
            let err = client.request("room.list", json!({})).unwrap_err();
            assert!(matches!(err, Error::BadAnswer(_)), "{garbage}: {err:?}");
            assert!(err.to_string().starts_with("bad answer from the node: "));
        }
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let server = serve(vec![Reply::Bytes(b"\xff\xfe{}\n".to_vec())]);
        let mut client = Client::connect(&server.path, T).unwrap();
        let err = client.request("room.list", json!({})).unwrap_err();
        assert!(matches!(err, Error::BadAnswer(_)), "{err:?}");
    }

    #[test]
    fn a_closed_connection_is_an_error() {
        let server = serve(vec![Reply::lines(&[])]);
        let mut client = Client::connect(&server.path, T).unwrap();
        let err = client.request("room.list", json!({})).unwrap_err();
        assert!(matches!(err, Error::Closed), "{err:?}");
    }

    #[test]
    fn a_silent_node_times_out() {
        let server = serve(vec![Reply::Silence(Duration::from_secs(2))]);
        let mut client = Client::connect(&server.path, Some(Duration::from_millis(200))).unwrap();
        let started = Instant::now();
        let err = client.request("room.list", json!({})).unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn garbage_in_the_event_stream_ends_it_with_an_error() {
        let server = serve(vec![Reply::lines(&[
            r#"{"jsonrpc":"2.0","id":$ID,"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"events_lost","count":1}}"#,
            "garbage",
            r#"{"jsonrpc":"2.0","method":"event","params":{"type":"events_lost","count":2}}"#,
        ])]);
        let mut client = Client::connect(&server.path, T).unwrap();
        client.request("events.subscribe", json!({})).unwrap();
        let items: Vec<Result<Value, Error>> = client.notifications().collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(Error::BadAnswer(_))));
    }

    #[test]
    fn a_missing_socket_is_a_connect_error_with_a_hint() {
        let path = std::env::temp_dir().join(format!(
            "chorusctl-missing-{}/control.sock",
            std::process::id()
        ));
        let err = Client::connect(&path, T).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("is the node running with --control?"),
            "{message}"
        );
    }

    #[test]
    fn excerpts_are_cut_on_char_boundaries() {
        let long = "é".repeat(300);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), 121);
        assert_eq!(excerpt("short"), "short");
    }
}
