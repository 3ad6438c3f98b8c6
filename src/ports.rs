//! Ports `run` and `serve` need, checked before anything starts: a port that is taken
//! is named with the flag that sets it and, where /proc tells, the process holding it
//! (typically an Envoy left behind by an earlier gateway).

use std::fmt;
use std::io::ErrorKind;

/// A port some other socket holds.
#[derive(Debug, thiserror::Error)]
#[error("port {port} ({purpose}, {flag}) is already in use{holder}; stop that process or choose another port with {flag}")]
pub struct PortTaken {
    pub port: u16,
    pub flag: &'static str,
    pub purpose: &'static str,
    pub holder: Holder,
}

/// Who holds a port, as far as /proc says.
#[derive(Debug)]
pub struct Holder(Option<(u32, String)>);

impl Holder {
    pub fn of(port: u16) -> Holder {
        Holder(holder_of(port))
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some((pid, name)) => write!(f, " by {name} (pid {pid})"),
            None => write!(f, " by another process"),
        }
    }
}

/// Fails when a TCP listener on `address:port` could not be opened now. A plain bind (no
/// SO_REUSEPORT) also fails against Envoy's listeners, which set SO_REUSEPORT and would
/// otherwise let a second Envoy share the port with the first.
pub fn ensure_free(
    address: &str,
    port: u16,
    flag: &'static str,
    purpose: &'static str,
) -> Result<(), PortTaken> {
    match std::net::TcpListener::bind((address, port)) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => Err(PortTaken {
            port,
            flag,
            purpose,
            holder: Holder::of(port),
        }),
        // Other failures (an address not on this machine, …) are reported by whoever
        // binds for real, with its own words.
        _ => Ok(()),
    }
}

/// The process with a listening socket on `port`: the socket's inode from
/// /proc/net/tcp{,6}, then the process whose fd table holds that inode.
fn holder_of(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue; // another user's process: not ours to read
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(process.path().join("comm"))
                .map(|n| n.trim().to_string())
                .unwrap_or_else(|_| "a process".into());
            return Some((pid, name));
        }
    }
    None
}

/// Inodes of the LISTEN (state 0A) sockets on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    let port_hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (local.ends_with(&port_hex) && *state == "0A" && *inode != "0")
                .then(|| inode.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_sockets_from_the_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:07B7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000\n\
   1: 0100007F:07B7 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000\n\
   2: 0100007F:17B7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000\n";
        assert_eq!(listening_inodes(table, 1975), vec!["4242".to_string()]);
    }

    #[test]
    fn a_taken_port_names_this_process() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = ensure_free("127.0.0.1", port, "--port", "the gateway's listener").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&format!("port {port}")) && text.contains("--port"));
        drop(listener);
        assert!(ensure_free("127.0.0.1", port, "--port", "the gateway's listener").is_ok());
    }
}
