//! A fake node for the tests: a Unix socket in a fresh temporary directory, served by
//! a thread that answers each request line with canned lines, then hangs up.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// What the fake node does after reading one request.
pub enum Reply {
    /// Writes these lines, each with `$ID` replaced by the request's id.
    Lines(Vec<String>),
    /// Writes these bytes as they are.
    Bytes(Vec<u8>),
    /// Writes nothing for this long.
    Silence(Duration),
}

impl Reply {
    pub fn lines(lines: &[&str]) -> Reply {
        Reply::Lines(lines.iter().map(|l| (*l).to_owned()).collect())
    }
}

pub struct Server {
    pub path: PathBuf,
    dir: PathBuf,
    thread: Option<JoinHandle<Vec<Value>>>,
}

impl Server {
    /// The requests the fake node read (waits for it to hang up).
    pub fn requests(mut self) -> Vec<Value> {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves one connection: reads a request line, sends `replies[i]`; hangs up after
/// the last reply.
pub fn serve(replies: Vec<Reply>) -> Server {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "chorusctl-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut requests = Vec::new();
        for reply in replies {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let request: Value = serde_json::from_str(&line).unwrap();
            let id = request["id"].to_string();
            requests.push(request);
            match reply {
                Reply::Lines(lines) => {
                    for l in lines {
                        let l = l.replace("$ID", &id);
                        if writer.write_all(format!("{l}\n").as_bytes()).is_err() {
                            break;
                        }
                    }
                }
                Reply::Bytes(bytes) => {
                    let _ = writer.write_all(&bytes);
                }
                Reply::Silence(d) => std::thread::sleep(d),
            }
        }
        requests
    });
    Server {
        path,
        dir,
        thread: Some(thread),
    }
}
