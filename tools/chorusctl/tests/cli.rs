//! The built `chorusctl` binary against a fake node: a Unix socket in a temporary
//! directory, answered by a thread with canned lines.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use serde_json::{json, Value};

struct FakeNode {
    dir: PathBuf,
    path: PathBuf,
    thread: Option<JoinHandle<Value>>,
}

impl FakeNode {
    /// Answers one request with `lines` (`$ID` becomes the request's id), then hangs up.
    fn answering(lines: &[&str]) -> FakeNode {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chorusctl-cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut request = String::new();
            BufReader::new(stream).read_line(&mut request).unwrap();
            let request: Value = serde_json::from_str(&request).unwrap();
            for line in lines {
                let line = line.replace("$ID", &request["id"].to_string());
                writer.write_all(format!("{line}\n").as_bytes()).unwrap();
            }
            request
        });
        FakeNode {
            dir,
            path,
            thread: Some(thread),
        }
    }

    /// Runs `chorusctl --socket <this node> args…`; returns its output and the request
    /// the node read.
    fn run(mut self, args: &[&str]) -> (Output, Value) {
        let output = chorusctl()
            .arg("--socket")
            .arg(&self.path)
            .args(args)
            .output()
            .unwrap();
        let request = self.thread.take().unwrap().join().unwrap();
        (output, request)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chorusctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chorusctl"));
    c.env_remove("CHORUS_CONTROL");
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const ROOM: &str = r#"{"room":"g1","kind":"guild","max_participants":100,"audio_slots":8,"empty_timeout_s":300,"metadata":"","participants":3,"auto_created":false,"home_shard":1}"#;

#[test]
fn room_list_prints_a_table() {
    let node = FakeNode::answering(&[&format!(
        r#"{{"jsonrpc":"2.0","id":$ID,"result":{{"rooms":[{ROOM}]}}}}"#
    )]);
    let (out, request) = node.run(&["room", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "\
ROOM  KIND   PARTICIPANTS  MAX  SLOTS  EMPTY_TIMEOUT  HOME_SHARD
g1    guild             3  100      8           300s           1
"
    );
    assert_eq!(request["jsonrpc"], "2.0");
    assert_eq!(request["method"], "room.list");
    assert_eq!(request["params"], json!({}));
}

#[test]
fn json_room_get_prints_the_result() {
    let node = FakeNode::answering(&[
        r#"{"jsonrpc":"2.0","method":"event","params":{"type":"events_lost","count":1}}"#,
        &format!(r#"{{"jsonrpc":"2.0","id":$ID,"result":{ROOM}}}"#),
    ]);
    let (out, request) = node.run(&["--json", "room", "get", "g1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::from_str::<Value>(ROOM).unwrap());
    assert!(text(&out.stdout).starts_with("{\n  \""), "pretty-printed");
    assert_eq!(request["method"], "room.get");
    assert_eq!(request["params"], json!({"room": "g1"}));
}

#[test]
fn a_node_error_exits_1_with_its_name_and_code() {
    let node = FakeNode::answering(&[
        r#"{"jsonrpc":"2.0","id":$ID,"error":{"code":-32001,"message":"no room named \"x\"","data":{"name":"room_not_found"}}}"#,
    ]);
    let (out, _) = node.run(&["room", "delete", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "chorusctl: no room named \"x\" (room_not_found, code -32001)\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn garbage_from_the_node_exits_1() {
    let node = FakeNode::answering(&["<html>"]);
    let (out, _) = node.run(&["node", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("chorusctl: bad answer from the node: not JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_socket_exits_3_with_a_hint() {
    let path = std::env::temp_dir().join(format!(
        "chorusctl-cli-missing-{}/control.sock",
        std::process::id()
    ));
    let out = chorusctl()
        .arg("--socket")
        .arg(&path)
        .args(["room", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "chorusctl: cannot connect to {}: ",
            path.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("(is the node running with --control?)"),
        "{err}"
    );
}

#[test]
fn the_socket_comes_from_chorus_control() {
    let node = FakeNode::answering(&[r#"{"jsonrpc":"2.0","id":$ID,"result":{}}"#]);
    let out = chorusctl()
        .env("CHORUS_CONTROL", &node.path)
        .args(["participant", "mute", "g1", "p1f"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "participant p1f in g1 server-muted\n");
}

#[test]
fn usage_errors_exit_2() {
    let out = chorusctl()
        .args(["room", "get", "no spaces"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = chorusctl().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
