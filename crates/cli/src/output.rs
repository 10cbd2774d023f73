//! Human or `--json` output: one JSON object per line, each with a "type" field.

use std::path::Path;

use serde_json::{Value, json};
use tacit_client::{HistoryEntry, ReceivedMessage, SentMessage};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 (UTC) from milliseconds since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Where results go.
pub struct Out {
    json: bool,
}

impl Out {
    /// JSON lines or text.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    fn line(&self, v: Value) {
        println!("{v}");
    }

    /// A ready-made JSON line.
    pub fn raw(&self, v: Value) {
        self.line(v);
    }

    /// An error: a JSON line on stdout with `--json`, else text on stderr.
    pub fn error(&self, kind: &str, message: &str) {
        if self.json {
            self.line(json!({"type": "error", "kind": kind, "message": message}));
        } else {
            eprintln!("error: {message}");
        }
    }

    /// Warnings from the SDK.
    pub fn warnings(&self, warnings: Vec<String>) {
        for w in warnings {
            if self.json {
                self.line(json!({"type": "warning", "message": w}));
            } else {
                eprintln!("warning: {w}");
            }
        }
    }

    /// `account create`.
    pub fn account_created(&self, name: &str, device: u32, server: &str, home: &Path) {
        if self.json {
            self.line(json!({"type": "account", "name": name, "device": device, "server": server,
                "home": home.display().to_string()}));
        } else {
            println!("created account {name} (device {device}) on {server}; store in {}", home.display());
        }
    }

    /// `account delete`.
    pub fn account_deleted(&self, name: &str) {
        if self.json {
            self.line(json!({"type": "account_deleted", "name": name}));
        } else {
            println!("deleted account {name} from the server and this device");
        }
    }

    /// `send`.
    pub fn sent(&self, to: &str, m: &SentMessage) {
        if self.json {
            self.line(json!({"type": "sent", "to": to, "devices": m.devices,
                "server_time": rfc3339(m.server_time_ms), "sent_time": rfc3339(m.sent_time_ms)}));
        } else {
            println!(
                "sent to {to} ({} device{})",
                m.devices.len(),
                if m.devices.len() == 1 { "" } else { "s" }
            );
        }
    }

    /// One received message.
    pub fn message(&self, m: &ReceivedMessage) {
        if self.json {
            self.line(json!({"type": "message", "from": m.from, "device": m.device,
                "server_time": rfc3339(m.server_time_ms), "sent_time": rfc3339(m.sent_time_ms), "text": m.text}));
        } else {
            println!("[{}] {}: {}", rfc3339(m.server_time_ms), m.from, m.text);
        }
    }

    /// One history entry.
    pub fn history(&self, e: &HistoryEntry) {
        let server_time = e.server_time_ms.map(rfc3339);
        if self.json {
            self.line(json!({"type": "history", "peer": e.peer,
                "direction": if e.outgoing { "sent" } else { "received" }, "device": e.device,
                "server_time": server_time, "sent_time": rfc3339(e.sent_time_ms), "text": e.text}));
        } else {
            let when = server_time.unwrap_or_else(|| format!("{} (not confirmed)", rfc3339(e.sent_time_ms)));
            let arrow = if e.outgoing { format!("me -> {}", e.peer) } else { format!("{} -> me", e.peer) };
            println!("[{when}] {arrow}: {}", e.text);
        }
    }

    /// `safety-number`.
    pub fn safety_number(&self, name: &str, number: &str, verified: bool) {
        if self.json {
            self.line(json!({"type": "safety_number", "name": name, "number": number, "verified": verified}));
        } else {
            println!("{number}");
        }
    }

    /// `verify`.
    pub fn verified(&self, name: &str) {
        if self.json {
            self.line(json!({"type": "verified", "name": name}));
        } else {
            println!("{name} is verified");
        }
    }

    /// `store rekey`.
    pub fn rekeyed(&self, passphrase: bool) {
        if self.json {
            self.line(json!({"type": "rekeyed", "passphrase": passphrase}));
        } else if passphrase {
            println!("the store now uses the new passphrase");
        } else {
            println!("the store now uses a private key file (no passphrase)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
