//! `chorusctl`: the command line over a Chorus node's control socket.
//!
//! The node (`chorus --control`) listens on a Unix socket for JSON-RPC 2.0, one JSON
//! object per line (the contract is `docs/control.md`, the types are
//! `chorus_protocol::control`). `chorusctl` is a thin, synchronous client of it:
//!
//! ```text
//! chorusctl room create g1 --kind guild
//! chorusctl participant list g1
//! chorusctl --json node stats
//! chorusctl events --type quality --room g1
//! chorusctl call room.get '{"room":"g1"}'
//! ```
//!
//! - `cli`: the commands, the method and params each sends, how results are shown;
//! - `client`: the connection (requests matched to answers by id, the event stream);
//! - `format`: the human output (tables, key/value tables, one line per event).
//!
//! Exit status: 0 done, 1 the node answered with an error (or with something
//! unreadable), 2 usage error, 3 the socket could not be connected to.

mod cli;
mod client;
mod format;
#[cfg(test)]
mod test_server;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let (mut out, mut err) = (io::stdout().lock(), io::stderr());
    match cli.run(&mut out, &mut err) {
        Ok(()) => ExitCode::SUCCESS,
        // `chorusctl events | head`: the reader is gone, which is not a failure.
        Err(cli::Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let code = match &e {
                cli::Failure::Node(e) => e.exit_code(),
                cli::Failure::Output(_) => 1,
            };
            let _ = writeln!(err, "chorusctl: {e}");
            ExitCode::from(code)
        }
    }
}
