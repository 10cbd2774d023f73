//! Human or `--json` output: one JSON object per line, each with a "type" field.

use std::path::Path;

use serde_json::{Value, json};
use tacit_client::{GroupEvent, GroupHistoryEntry, HistoryEntry, ReceivedMessage, SentMessage};
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

    /// Whether output is JSON lines.
    pub fn is_json(&self) -> bool {
        self.json
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

    /// Something the user should know while a command works (it waits for another process):
    /// a warning line with `--json`, else a note on standard error.
    pub fn notice(&self, message: &str) {
        if self.json {
            self.line(json!({"type": "warning", "message": message}));
        } else {
            eprintln!("note: {message}");
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

    /// `account forget` (`name`: `None` when the store could not be opened to read it).
    pub fn account_forgotten(&self, name: Option<&str>, home: &Path) {
        if self.json {
            self.line(json!({"type": "account_forgotten", "name": name}));
        } else {
            match name {
                Some(name) => println!("removed account {name} from this device ({})", home.display()),
                None => println!("removed the account from this device ({})", home.display()),
            }
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
        match (&m.group, self.json) {
            (None, true) => self.line(json!({"type": "message", "from": m.from, "device": m.device,
                "server_time": rfc3339(m.server_time_ms), "sent_time": rfc3339(m.sent_time_ms), "text": m.text})),
            (Some(g), true) => self.line(json!({"type": "message", "group": g, "from": m.from, "device": m.device,
                "server_time": rfc3339(m.server_time_ms), "sent_time": rfc3339(m.sent_time_ms), "text": m.text})),
            (None, false) => println!("[{}] {}: {}", rfc3339(m.server_time_ms), m.from, terminal_safe(&m.text)),
            (Some(g), false) => println!(
                "[{}] {} in {}: {}",
                rfc3339(m.server_time_ms),
                m.from,
                terminal_safe(g),
                terminal_safe(&m.text)
            ),
        }
    }

    /// Something that happened to a group (a `group_event` line).
    pub fn group_event(&self, ev: &GroupEvent) {
        let devices = |d: &[(String, u32)]| -> Vec<Value> {
            d.iter().map(|(a, n)| json!({"account": a, "device": n})).collect()
        };
        let (v, text) = match ev {
            GroupEvent::Joined { group, by } => (
                json!({"type": "group_event", "event": "joined", "group": group, "by": by}),
                format!("{by} added you to {}", terminal_safe(group)),
            ),
            GroupEvent::Added { group, by, devices: d } => (
                json!({"type": "group_event", "event": "added", "group": group, "by": by, "devices": devices(d)}),
                format!("{by} added {} to {}", accounts(d), terminal_safe(group)),
            ),
            GroupEvent::Removed { group, by, devices: d } => (
                json!({"type": "group_event", "event": "removed", "group": group, "by": by, "devices": devices(d)}),
                format!("{by} removed {} from {}", accounts(d), terminal_safe(group)),
            ),
            GroupEvent::Renamed { group, by } => (
                json!({"type": "group_event", "event": "renamed", "group": group, "by": by}),
                format!("{by} renamed the group to {}", terminal_safe(group)),
            ),
            GroupEvent::RemovedMe { group, by } => (
                json!({"type": "group_event", "event": "removed_me", "group": group, "by": by}),
                format!("{by} removed this device from {}", terminal_safe(group)),
            ),
            GroupEvent::Rejoined { group, by, devices: d } => (
                json!({"type": "group_event", "event": "rejoined", "group": group, "by": by, "devices": devices(d)}),
                format!(
                    "{by} took {} back into {} with new keys (restored from an older copy, or reinstalled)",
                    accounts(d),
                    terminal_safe(group)
                ),
            ),
            GroupEvent::RejoinedMe { group, by } => (
                json!({"type": "group_event", "event": "rejoined_me", "group": group, "by": by}),
                format!(
                    "{by} took this device back into {}: it reads and sends in it again",
                    terminal_safe(group)
                ),
            ),
            _ => return,
        };
        if self.json {
            self.line(v);
        } else {
            println!("* {text}");
        }
    }

    /// One entry of a group's history.
    pub fn group_history(&self, group: &str, e: &GroupHistoryEntry) {
        let server_time = e.server_time_ms.map(rfc3339);
        if self.json {
            self.line(json!({"type": "history", "group": group, "from": e.from, "device": e.device,
                "direction": if e.outgoing { "sent" } else { "received" },
                "server_time": server_time, "sent_time": rfc3339(e.sent_time_ms), "text": e.text}));
        } else {
            let when = server_time.unwrap_or_else(|| format!("{} (not confirmed)", rfc3339(e.sent_time_ms)));
            println!("[{when}] {}: {}", e.from, terminal_safe(&e.text));
        }
    }

    /// One history entry. A sent message says how many of the recipient's devices have
    /// receipted it, of how many it went to ("delivered", "devices"; null when unknown or
    /// received).
    pub fn history(&self, e: &HistoryEntry) {
        let server_time = e.server_time_ms.map(rfc3339);
        if self.json {
            self.line(json!({"type": "history", "peer": e.peer,
                "direction": if e.outgoing { "sent" } else { "received" }, "device": e.device,
                "server_time": server_time, "sent_time": rfc3339(e.sent_time_ms), "text": e.text,
                "message_id": e.message_id.map(|id| hex(&id)), "delivered": e.delivered, "devices": e.devices}));
        } else {
            let when = server_time.unwrap_or_else(|| format!("{} (not confirmed)", rfc3339(e.sent_time_ms)));
            let arrow = if e.outgoing { format!("me -> {}", e.peer) } else { format!("{} -> me", e.peer) };
            println!("[{when}] {arrow}: {}{}", terminal_safe(&e.text), delivery(e));
        }
    }

    /// A notice in a history (a device added or removed).
    pub fn notice_line(&self, peer: &str, time_ms: u64, text: &str) {
        if self.json {
            self.line(json!({"type": "notice", "peer": peer, "time": rfc3339(time_ms), "text": text}));
        } else {
            println!("[{}] notice: {}", rfc3339(time_ms), terminal_safe(text));
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

    /// `kt status`.
    pub fn kt_status(&self, s: &tacit_client::KtStatus) {
        let own = s
            .own_history
            .as_ref()
            .map(|o| json!({"epoch": o.epoch, "versions": o.versions, "alarms": o.alarms}));
        if self.json {
            self.line(json!({"type": "kt_status", "namespace": s.namespace, "public_key": s.public_key,
                "key_id": s.key_id,
                "newest_epoch": s.newest_epoch.as_ref().map(|e| e.0),
                "newest_epoch_signed_ms": s.newest_epoch.as_ref().map(|e| e.1),
                "newest_root": s.newest_epoch.as_ref().map(|e| e.2.clone()),
                "own_history": own, "forks": s.forks, "cosignatures": [],
                "retired": s.retired.iter().map(retired_json).collect::<Vec<_>>()}));
            return;
        }
        println!("log:            {} (key {}, key id {})", s.namespace, s.public_key, s.key_id);
        match &s.newest_epoch {
            Some((epoch, ms, root)) => println!("newest epoch:   {epoch} (signed at {ms} ms, root {root})"),
            None => println!("newest epoch:   none yet"),
        }
        match &s.own_history {
            Some(o) if o.alarms.is_empty() => {
                println!(
                    "own history:    {} version(s) checked at epoch {}: all made by this account",
                    o.versions, o.epoch
                );
            }
            Some(o) => {
                println!("own history:    {} version(s) checked at epoch {}: ALARM", o.versions, o.epoch);
                for a in &o.alarms {
                    println!("  ALARM: {a}");
                }
            }
            None => println!("own history:    not in the directory yet"),
        }
        for f in &s.forks {
            println!("  ALARM: {f}");
        }
        println!("cosignatures:   none required");
        for r in &s.retired {
            println!(
                "left log:       key {} at {} ms (newest epoch seen: {}), for key {}",
                r.public_key,
                r.retired_ms,
                epoch_or_none(r.newest_epoch),
                r.new_key
            );
        }
    }

    /// `kt trust-new-log`: the log now trusted and the one left (`None`: trusted already).
    pub fn kt_new_log(&self, key: &[u8; 32], retired: Option<&tacit_client::RetiredLog>) {
        let key = hex(key);
        if self.json {
            self.line(json!({"type": "kt_new_log", "public_key": key, "retired": retired.map(retired_json)}));
            return;
        }
        match retired {
            None => {
                println!("the log under key {key} is the one this device trusts already; nothing changed")
            }
            Some(r) if r.public_key.is_empty() => println!("now trusting the log under key {key}"),
            Some(r) => println!(
                "now trusting the log under key {key}; left the log under key {} (newest epoch seen: {})",
                r.public_key,
                epoch_or_none(r.newest_epoch)
            ),
        }
    }

    /// `audit --serve`: the address it listens on.
    pub fn serving_audits(&self, addr: std::net::SocketAddr) {
        if self.json {
            self.line(json!({"type": "audit_serving", "listen": addr.to_string()}));
        } else {
            println!("serving countersignatures over plexi's API on http://{addr}");
        }
    }

    /// `kt export`.
    pub fn kt_exported(&self, epoch: u64, dir: &Path) {
        if self.json {
            self.line(json!({"type": "kt_export", "epoch": epoch, "out": dir.display().to_string(),
                "files": ["proof.bin", "signature.json", "verifying_key.hex"]}));
        } else {
            println!(
                "wrote epoch {epoch}'s proof.bin, signature.json and verifying_key.hex to {}",
                dir.display()
            );
        }
    }

    /// A count of work done so far on a terminal (nothing with --json or without a terminal).
    pub fn progress(&self, what: &str, done: u64, total: u64) {
        use std::io::IsTerminal as _;
        if self.json || !std::io::stderr().is_terminal() {
            return;
        }
        eprint!("\r{what} {done}/{total}");
        if done == total {
            eprintln!();
        }
    }

    /// `audit`.
    pub fn audit(
        &self,
        server: &str,
        state: &Path,
        r: &tacit_client::audit::AuditReport,
        cosign: Option<[u8; 32]>,
    ) {
        let per_epoch_ms = if r.epochs == 0 { 0.0 } else { r.seconds * 1000.0 / r.epochs as f64 };
        let cosign_key = cosign.map(|k| k.iter().map(|b| format!("{b:02x}")).collect::<String>());
        if self.json {
            self.line(json!({"type": "audit", "server": server, "state": state.display().to_string(),
                "namespace": r.namespace, "public_key": r.public_key, "from": r.from, "to": r.to,
                "epochs": r.epochs, "seconds": r.seconds, "ms_per_epoch": per_epoch_ms,
                "cosigned": r.cosigned, "cosign_key": cosign_key,
                "posted_epoch": r.posted.as_ref().and_then(|p| p.as_ref().ok()),
                "post_error": r.posted.as_ref().and_then(|p| p.as_ref().err())}));
            return;
        }
        if r.epochs == 0 {
            println!(
                "{} ({}): nothing new since epoch {}; the newest root is the one audited",
                r.namespace, server, r.to
            );
        } else {
            println!(
                "{} ({}): epochs {} to {} verified ({} epochs, {:.2} ms each): every root signed by {} and each \
                 epoch an append-only extension of the one before",
                r.namespace, server, r.from, r.to, r.epochs, per_epoch_ms, r.public_key
            );
        }
        if let Some(k) = cosign_key {
            println!("countersigned {} root(s) with {k}", r.cosigned);
        }
        match &r.posted {
            Some(Ok(epoch)) => println!("the server keeps the cosignature of epoch {epoch} for its clients"),
            Some(Err(e)) => {
                println!(
                    "the server did not take the cosignature ({e}); clients requiring this auditor find none there"
                )
            }
            None => {}
        }
        println!("state saved in {}", state.display());
    }

    /// `audit --log-dir`.
    pub fn audit_log_dir(&self, dir: &Path, r: &tacit_client::audit::AuditReport) {
        if self.json {
            self.line(json!({"type": "audit", "log_dir": dir.display().to_string(), "namespace": r.namespace,
                "public_key": r.public_key, "from": r.from, "to": r.to, "epochs": r.epochs, "seconds": r.seconds}));
            return;
        }
        println!(
            "{}: epochs {} to {} verified ({} audit blobs): one chain, each epoch an append-only extension of the one before{}",
            dir.display(),
            r.from,
            r.to,
            r.epochs,
            if r.public_key.is_empty() { "" } else { "; the signatures present verify under the key given" }
        );
    }

    /// `kt history NAME`.
    pub fn kt_history(&self, name: &str, versions: &[tacit_client::KtVersion]) {
        for v in versions {
            if self.json {
                self.line(json!({"type": "kt_version", "name": name, "version": v.version, "epoch": v.epoch,
                    "deleted": v.account_key.is_none(), "account_key": v.account_key,
                    "list_version": v.list_version, "devices": v.devices}));
            } else {
                match &v.account_key {
                    Some(key) => println!(
                        "version {} (epoch {}): account key {key}, device list {} with devices {:?}",
                        v.version,
                        v.epoch,
                        v.list_version.unwrap_or(0),
                        v.devices
                    ),
                    None => println!("version {} (epoch {}): account deleted", v.version, v.epoch),
                }
            }
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

    /// `session reset`.
    pub fn session_reset(&self, name: &str, devices: &[u32]) {
        if self.json {
            self.line(json!({"type": "session_reset", "name": name, "devices": devices}));
        } else {
            println!(
                "started a new session with {name} ({} device{}); the next messages both ways use it",
                devices.len(),
                if devices.len() == 1 { "" } else { "s" }
            );
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

/// What a continuation line of a message starts with in human output, so that a newline in
/// a message can never start a line that looks like another message.
const CONTINUATION: &str = "\n    | ";

/// A peer's text made safe to print on a terminal (`--json` keeps the exact text): line
/// breaks become [`CONTINUATION`] (marked as part of the same message), and every control
/// character (C0, DEL, C1: escape sequences that would set the window title or clear the
/// screen), Unicode line and paragraph separators and bidirectional overrides (which reorder
/// what is shown: "Trojan Source") are printed escaped, as `\u{..}`.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => out.push_str(CONTINUATION),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// " (delivered to K of N devices)" after a sent message whose device count is known.
fn delivery(e: &HistoryEntry) -> String {
    match (e.outgoing, e.delivered, e.devices) {
        (true, Some(k), Some(n)) => {
            format!(" (delivered to {k} of {n} device{})", if n == 1 { "" } else { "s" })
        }
        (true, Some(k), None) if k > 0 => {
            format!(" (delivered to {k} device{})", if k == 1 { "" } else { "s" })
        }
        _ => String::new(),
    }
}

/// A retired log's newest epoch seen, for a person.
fn epoch_or_none(epoch: Option<u64>) -> String {
    epoch.map_or_else(|| "none".to_owned(), |e| e.to_string())
}

/// A log this device left (`kt status`, `kt trust-new-log` in `--json`).
fn retired_json(r: &tacit_client::RetiredLog) -> serde_json::Value {
    json!({"public_key": r.public_key, "newest_epoch": r.newest_epoch, "retired_ms": r.retired_ms, "new_key": r.new_key})
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The accounts of a device list, once each, in order.
fn accounts(devices: &[(String, u32)]) -> String {
    let mut names: Vec<&str> = devices.iter().map(|(a, _)| a.as_str()).collect();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_fake_a_line_or_reach_the_terminal_as_a_control() {
        let spoof =
            "hi\n[2026-01-01T00:00:00Z] bank: send money\x1b]0;pwned\x07\x1b[2J\r\n\u{9b}31m\u{202e}gpj.exe";
        let safe = terminal_safe(spoof);
        assert_eq!(
            safe,
            "hi\n    | [2026-01-01T00:00:00Z] bank: send money\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\n    | \\u{9b}31m\\u{202e}gpj.exe"
        );
        assert!(safe.lines().skip(1).all(|l| l.starts_with("    | ")), "{safe}");
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n'), "{safe:?}");
        // Ordinary text is unchanged; a tab is a control character like the others.
        assert_eq!(terminal_safe("héllo, wörld ✓"), "héllo, wörld ✓");
        assert_eq!(terminal_safe("a\tb"), "a\\u{9}b");
    }

    #[test]
    fn rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn a_sent_message_says_how_many_devices_have_it() {
        let e = |outgoing, delivered, devices| HistoryEntry {
            peer: "bob".into(),
            device: 0,
            outgoing,
            text: "hi".into(),
            server_time_ms: Some(1),
            sent_time_ms: 1,
            message_id: Some([0xab; 16]),
            delivered,
            devices,
        };
        assert_eq!(delivery(&e(true, Some(2), Some(3))), " (delivered to 2 of 3 devices)");
        assert_eq!(delivery(&e(true, Some(0), Some(1))), " (delivered to 0 of 1 device)");
        assert_eq!(delivery(&e(true, Some(1), None)), " (delivered to 1 device)");
        assert_eq!(delivery(&e(true, Some(0), None)), "", "a note to self");
        assert_eq!(delivery(&e(false, None, None)), "");
        assert_eq!(hex(&[0xab; 16]), "ab".repeat(16));
    }
}
