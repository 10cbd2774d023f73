//! `tacit device ...`, `safety-number --qr` and `verify --scan`: commands and their output.

use std::io::{IsTerminal, Write};
use std::path::Path;

use serde_json::json;
use tacit_client::{ApproveOptions, Client, ClientError, ConnectOptions, DeviceInfo, LinkEvent, NewDevice};

use crate::args::{ApproveArgs, DeviceCommand, LinkArgs, RevokeArgs};
use crate::output::{Out, rfc3339, terminal_safe};
use crate::{CliError, new_secret, open};

/// A QR code of `text` for a terminal (two modules per character cell, dark on light, with
/// the quiet zone the standard asks for), or `None` when it does not fit a QR code.
pub fn qr_text(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Asks `question` on the terminal; `true` for y/yes.
fn ask_yes(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::Local(format!("cannot read the answer: {e}")))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// A progress bar on standard error (only on a terminal and without `--json`).
struct Progress {
    shown: bool,
    last: u64,
    what: &'static str,
}

impl Progress {
    fn new(json: bool, what: &'static str) -> Self {
        Self { shown: !json && std::io::stderr().is_terminal(), last: u64::MAX, what }
    }

    fn update(&mut self, done: u64, all: u64) {
        if !self.shown || all == 0 {
            return;
        }
        let pct = done.saturating_mul(100) / all;
        if pct == self.last {
            return;
        }
        self.last = pct;
        let filled = usize::try_from(pct / 4).unwrap_or(25).min(25);
        eprint!(
            "\r{} [{}{}] {pct:>3}% ({:.1} of {:.1} MB)",
            self.what,
            "#".repeat(filled),
            " ".repeat(25 - filled),
            done as f64 / 1e6,
            all as f64 / 1e6
        );
        if done >= all {
            eprintln!();
        }
    }
}

pub async fn run(
    cmd: DeviceCommand,
    home: &Path,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    match cmd {
        DeviceCommand::Link(a) => link(a, home, options, out, json).await,
        DeviceCommand::Approve(a) => approve(a, home, options, out, json).await,
        DeviceCommand::List => {
            let mut c = open(home, options, json)?;
            let r = c.devices().await;
            out.warnings(c.take_warnings());
            for d in r? {
                device_line(out, &d);
            }
            Ok(())
        }
        DeviceCommand::Revoke(a) => revoke(a, home, options, out, json).await,
    }
}

fn device_line(out: &Out, d: &DeviceInfo) {
    if out.is_json() {
        out.raw(json!({"type": "device", "id": d.id, "label": d.label, "added": rfc3339(d.added_ms),
            "last_seen": d.last_seen_ms.map(rfc3339), "current": d.current, "approver": d.approver}));
    } else {
        println!(
            "{:>3}  {:<24} added {}  last seen {}{}{}",
            d.id,
            if d.label.is_empty() { "(no label)".to_owned() } else { terminal_safe(&d.label) },
            rfc3339(d.added_ms),
            d.last_seen_ms.map_or_else(|| "never".to_owned(), rfc3339),
            if d.approver { "  [approver]" } else { "" },
            if d.current { "  (this device)" } else { "" },
        );
    }
}

async fn link(
    a: LinkArgs,
    home: &Path,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    let secret = new_secret("TACIT_PASSPHRASE", false)?;
    let mut progress = Progress::new(json, "history");
    let mut events = |e: LinkEvent| match e {
        LinkEvent::Code { code, fingerprint } => {
            if json {
                out.raw(json!({"type": "link_code", "link_code": code, "fingerprint": fingerprint}));
            } else {
                if std::io::stdout().is_terminal()
                    && let Some(qr) = qr_text(&code)
                {
                    println!("{qr}");
                }
                println!("link code: {code}");
                println!(
                    "this device's fingerprint: {fingerprint} (the approving device shows it too: compare)"
                );
                println!(
                    "On a device of your account that holds the account key, run:\n  tacit device approve {code}\n\
                     (waiting up to 10 minutes)"
                );
            }
        }
        LinkEvent::Linked { account, device, approver } => {
            if json {
                out.raw(
                    json!({"type": "linked", "account": account, "device": device, "approver": approver}),
                );
            } else {
                println!(
                    "linked into {account} as device {device}{}",
                    if approver { " (holds the account key)" } else { "" }
                );
            }
        }
        LinkEvent::History(done, all) => progress.update(done, all),
        LinkEvent::HistoryDone(n) => {
            if json {
                out.raw(json!({"type": "history_imported", "messages": n}));
            } else {
                println!("history imported: {n} messages");
            }
        }
        LinkEvent::HistoryDeclined => {
            if json {
                out.raw(json!({"type": "history_declined"}));
            } else {
                println!("history declined (--no-history): nothing imported");
            }
        }
        LinkEvent::HistoryFailed(reason) => {
            if json {
                out.raw(json!({"type": "history_failed", "reason": reason}));
            } else {
                eprintln!(
                    "warning: the history could not be imported ({reason}); this device is linked without it \
                     (messages from now on arrive as usual)"
                );
            }
        }
    };
    let history = !a.no_history;
    let mut c = Client::link_device(home, secret, &a.server, &a.label, history, options, &mut events).await?;
    out.warnings(c.take_warnings());
    Ok(())
}

async fn approve(
    a: ApproveArgs,
    home: &Path,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    let code = a.code.join("");
    let mut c = open(home, options, json)?;
    let interactive = std::io::stdin().is_terminal();
    if !a.yes && !interactive {
        return Err(CliError::Usage(
            "device approve adds a device to your account: pass --yes to confirm (there is no terminal to ask on)"
                .into(),
        ));
    }
    let yes = a.yes;
    let mut fingerprint = String::new();
    let mut confirm = |d: &NewDevice| {
        fingerprint.clone_from(&d.fingerprint);
        let label = if d.label.is_empty() { "(no label)".to_owned() } else { terminal_safe(&d.label) };
        if yes {
            if !json {
                eprintln!("adding device \"{label}\" (fingerprint {})", d.fingerprint);
            }
            return true;
        }
        eprintln!(
            "A new device asks to join your account:\n  label:       {label}\n  fingerprint: {}",
            d.fingerprint
        );
        eprintln!("Check that the new device shows the same fingerprint.");
        ask_yes("Add it?").unwrap_or(false)
    };
    let mut progress = Progress::new(json, "history");
    let mut on_progress = |done: u64, all: u64| progress.update(done, all);
    let options = ApproveOptions { approver: a.approver, history: !a.no_history };
    let r = c.approve_device(&code, options, &mut confirm, &mut on_progress).await;
    out.warnings(c.take_warnings());
    let d = r?;
    if json {
        out.raw(json!({"type": "device_approved", "id": d.id, "label": d.label, "approver": d.approver,
            "history": !a.no_history, "fingerprint": fingerprint}));
    } else {
        println!(
            "added device {} ({}){}",
            d.id,
            if d.label.is_empty() { "no label".to_owned() } else { terminal_safe(&d.label) },
            if d.approver { ", holding the account key" } else { "" }
        );
    }
    Ok(())
}

async fn revoke(
    a: RevokeArgs,
    home: &Path,
    options: &ConnectOptions,
    out: &Out,
    json: bool,
) -> Result<(), CliError> {
    let mut c = open(home, options, json)?;
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "device revoke removes a device from your account: pass --yes to confirm (there is no terminal \
                 to ask on)"
                    .into(),
            ));
        }
        let this = a.id == c.device_id();
        let q = if this {
            format!("Revoke this device ({}) and remove the account from it?", a.id)
        } else {
            format!("Revoke device {}? It will receive nothing more.", a.id)
        };
        if !ask_yes(&q)? {
            return Err(ClientError::Cancelled.into());
        }
    }
    let r = c.revoke_device(a.id).await;
    out.warnings(c.take_warnings());
    let r = r?;
    if json {
        out.raw(json!({"type": "device_revoked", "id": a.id, "account_key_rotated": r.rotated,
            "this_device": r.this_device}));
    } else {
        println!("revoked device {}", a.id);
        if r.rotated {
            println!(
                "it held the account key, so the account key was replaced: your contacts will be warned that \
                 your identity changed and your safety numbers with them change; compare them again"
            );
        }
        if r.this_device {
            println!("this device is no longer part of the account; its data was removed");
        }
    }
    Ok(())
}

/// `safety-number NAME --qr`: the QR code of the scannable payload and its text.
pub fn print_qr(out: &Out, name: &str, payload: &str) {
    if out.is_json() {
        out.raw(json!({"type": "safety_number_payload", "name": name, "payload": payload}));
    } else {
        if let Some(qr) = qr_text(payload) {
            println!("{qr}");
        }
        println!("scannable payload: {payload}");
        println!("(the other side runs: tacit verify <your name> --scan {payload})");
    }
}
