//! The node's CPU time and resident memory, from Linux `/proc`.

use std::io;

/// User and system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14
/// and 15, see proc(5)).
pub fn parse_stat_user_system(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': the
    // fields that follow start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state): utime is field 14, the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn parse_vmrss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_ascii_whitespace();
    let value = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// `(local port, drops)` of every socket in `/proc/net/udp` or `/proc/net/udp6` text:
/// datagrams the kernel dropped because the socket's receive buffer was full.
pub fn parse_udp_drops(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            // ref pointer drops
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let drops = fields.get(12)?.parse().ok()?;
            Some((port, drops))
        })
        .collect()
}

/// Receive-buffer drops per local UDP port, IPv4 and IPv6 sockets together.
pub fn udp_drops() -> Vec<(u16, u64)> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_udp_drops(&t))
        .collect()
}

/// The `Udp: RcvbufErrors` counter of `/proc/net/snmp` (all sockets of the host).
pub fn parse_snmp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = udp.next()?.split_ascii_whitespace();
    let values = udp.next()?.split_ascii_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
}

pub fn rcvbuf_errors() -> Option<u64> {
    parse_snmp_rcvbuf_errors(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Busy and total clock ticks of the whole host, all CPUs (the `cpu` line of
/// `/proc/stat`: busy is everything but idle and iowait).
pub fn parse_host_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

pub fn host_ticks() -> Option<(u64, u64)> {
    parse_host_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Nanoseconds the threads of `pid` spent runnable but waiting for a CPU (the second
/// field of each `/proc/PID/task/TID/schedstat`), summed over its threads.
pub fn runqueue_wait_ns(pid: &str) -> Option<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread ended
        };
        sum += text.split_ascii_whitespace().nth(1)?.parse::<u64>().ok()?;
    }
    Some(sum)
}

/// `pid` is a number or `"self"`.
pub fn cpu_ticks(pid: &str) -> io::Result<u64> {
    user_system_ticks(pid).map(|(user, system)| user + system)
}

/// User and system CPU ticks apart. On loopback the system time of the node also
/// pays the receive path of the clients' sockets (delivered inside its `sendmmsg`);
/// the user time is the node's own work.
pub fn user_system_ticks(pid: &str) -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_user_system(&text)
        .ok_or_else(|| io::Error::other(format!("unparsable /proc/{pid}/stat")))
}

pub fn rss_kb(pid: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss_kb(&text).ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), asked of `getconf` once; 100, the
/// Linux value, if that fails.
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STAT: &str = "12345 (chorus serve) S 1 12345 12345 0 -1 4194560 1913 0 0 0 \
        1520 387 0 0 20 0 4 0 9876543 123456789 4321 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17638 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn reads_user_plus_system_ticks() {
        assert_eq!(parse_stat_user_system(STAT), Some((1520, 387)));
    }

    #[test]
    fn survives_a_name_with_parentheses_and_spaces() {
        let odd = STAT.replace("(chorus serve)", "(a) b (c))");
        assert_eq!(parse_stat_user_system(&odd), Some((1520, 387)));
        assert_eq!(parse_stat_user_system("12 (x) S 1 2"), None);
        assert_eq!(parse_stat_user_system(""), None);
    }

    #[test]
    fn reads_vmrss() {
        let status = "Name:\tchorus\nVmPeak:\t  999 kB\nVmRSS:\t   48212 kB\nThreads:\t4\n";
        assert_eq!(parse_vmrss_kb(status), Some(48_212));
        assert_eq!(parse_vmrss_kb("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vmrss_kb("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn reads_udp_drops() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n\
16069: 0100007F:4648 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 132813 2 00000000780a0fa3 836124   \n\
  512: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 132999 2 00000000780a0fb0 0\n\
 garbage\n";
        assert_eq!(parse_udp_drops(table), vec![(17992, 836_124), (40_001, 0)]);
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
Udp: 2619254 89 836124 3455799 836125 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(parse_snmp_rcvbuf_errors(snmp), Some(836_125));
        assert_eq!(parse_snmp_rcvbuf_errors("Ip: a\nIp: 1\n"), None);
    }

    #[test]
    fn reads_host_ticks() {
        let stat = "cpu  346654 2386 51290 348371 2612 0 1663 291 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let busy = 346_654 + 2_386 + 51_290 + 1_663 + 291;
        assert_eq!(parse_host_ticks(stat), Some((busy, busy + 348_371 + 2_612)));
        assert_eq!(parse_host_ticks("intr 1 2\n"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_ticks("self").is_ok());
        assert!(rss_kb("self").unwrap() > 0);
        assert!(clock_ticks_per_second() > 0);
        assert!(runqueue_wait_ns("self").is_some());
        assert!(host_ticks().is_some_and(|(busy, total)| busy <= total));
    }
}
