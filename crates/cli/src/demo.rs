//! `tacit demo`: an embedded server on a free loopback port in a temporary folder, alice and
//! bob, a conversation with out-of-order delivery, both safety numbers, and a final check that
//! none of the plaintext is anywhere in the server's files: its database, WAL, log and any
//! other file in its folder, searched while it runs and after it stops, raw, in hex and in
//! base64. A positive control keeps the search honest: the name of a third account (the
//! marker, which the server does store in the clear) must be found, or the demo fails; so
//! must a server that does not shut down cleanly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::json;
use tacit_client::{Client, ReceivedMessage, StoreSecret};
use tacit_server::{Server, ServerConfig};

use crate::CliError;
use crate::output::{Out, rfc3339};

fn fail(what: &str) -> impl FnOnce(tacit_client::ClientError) -> CliError + '_ {
    move |e| CliError::Local(format!("demo: {what}: {e}"))
}

/// The server's log file, inside its data folder (so the search covers it like the rest).
const LOG_FILE: &str = "server.log";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The forms in which `text` could sit in a file: raw, hex (both cases), and base64 (standard
/// and URL-safe alphabets, padded or not) at each of the three alignments it can have inside
/// a longer encoded blob (only the 3-byte groups that lie wholly inside `text`).
fn forms(text: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = text.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![text.to_vec(), hex.clone().into_bytes(), hex.to_uppercase().into_bytes()];
    for shift in 0..3 {
        let rest = text.get(shift..).unwrap_or_default();
        let whole = rest.get(..rest.len() / 3 * 3).unwrap_or_default();
        if whole.len() >= 6 {
            out.push(STANDARD.encode(whole).into_bytes());
            out.push(URL_SAFE.encode(whole).into_bytes());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What a search of the server's folder found.
#[derive(Debug, Default)]
struct Findings {
    /// Files read (every search counted).
    files: usize,
    /// Bytes read.
    bytes: usize,
    /// The plaintexts found in some form, with the file they were in.
    leaks: Vec<(String, String)>,
    /// Files that hold the marker (the positive control).
    marker_in: Vec<String>,
}

/// Searches every file under `dir` for every form of each plaintext, and for the marker.
fn search(dir: &Path, plaintexts: &[String], marker: &str, into: &mut Findings) -> std::io::Result<()> {
    let mut stored = Vec::new();
    files(dir, &mut stored)?;
    let forms: Vec<(&String, Vec<Vec<u8>>)> = plaintexts.iter().map(|t| (t, forms(t.as_bytes()))).collect();
    for (path, bytes) in &stored {
        into.files += 1;
        into.bytes += bytes.len();
        for (text, fs) in &forms {
            if fs.iter().any(|f| contains(bytes, f)) {
                into.leaks.push(((*text).clone(), path.clone()));
            }
        }
        if contains(bytes, marker.as_bytes()) {
            into.marker_in.push(path.clone());
        }
    }
    Ok(())
}

/// The demo's verdict: no plaintext found, the marker found (else the search proved
/// nothing), equal safety numbers and a clean server shutdown.
fn verdict(findings: &Findings, numbers_match: bool, shutdown: Result<(), String>) -> Result<(), CliError> {
    shutdown.map_err(|e| CliError::Server(format!("demo: the server did not shut down cleanly: {e}")))?;
    if findings.marker_in.is_empty() {
        return Err(CliError::Local(
            "demo: the search did not find the planted marker in the server's files, so it proves nothing"
                .into(),
        ));
    }
    if !numbers_match || !findings.leaks.is_empty() {
        return Err(CliError::Security("demo check failed".into()));
    }
    Ok(())
}

/// A name nobody else uses, for the marker account.
fn marker_name() -> String {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("marker-{:x}-{:x}", std::process::id(), t & 0xffff_ffff_ffff)
}

/// Sends the embedded server's log (INFO, as `tacit server` logs) to `path`.
fn log_to(path: &PathBuf) -> Result<(), CliError> {
    let file = std::fs::File::create(path).map_err(|e| CliError::Local(format!("demo: server log: {e}")))?;
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
    Ok(())
}

/// Every file under `dir` (recursively), with its bytes.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files(&p, out)?;
        } else {
            out.push((p.display().to_string(), std::fs::read(&p)?));
        }
    }
    Ok(())
}

fn show(out: &Out, json: bool, m: &ReceivedMessage, to: &str) {
    if json {
        out.raw(json!({"type": "demo_message", "from": m.from, "to": to, "device": m.device,
            "server_time": rfc3339(m.server_time_ms), "sent_time": rfc3339(m.sent_time_ms), "text": m.text}));
    } else {
        println!("  {:>5} -> {:<5} {}", m.from, to, m.text);
    }
}

/// Runs the demo.
pub async fn run(out: &Out, json: bool) -> Result<(), CliError> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().map_err(|e| CliError::Local(format!("demo: temp folder: {e}")))?;
    let server_dir = tmp.path().join("server");
    let mut config = ServerConfig::default();
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.data_dir = server_dir.clone();
    config.shutdown_grace_secs = 1;
    // Key transparency epochs every 100 ms: the demo's accounts see each other at once.
    config.kt_epoch_interval_ms = 100;
    std::fs::create_dir_all(&server_dir).map_err(|e| CliError::Local(format!("demo: server folder: {e}")))?;
    log_to(&server_dir.join(LOG_FILE))?;
    let server = Server::bind(config).await.map_err(|e| CliError::Server(e.to_string()))?;
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    if !json {
        println!("Tacit demo: embedded server at {url}, data in {}", tmp.path().display());
    }

    let mut alice =
        Client::create_account(&tmp.path().join("alice"), StoreSecret::NoPassphrase, &url, "alice", None)
            .await
            .map_err(fail("create alice"))?;
    let mut bob =
        Client::create_account(&tmp.path().join("bob"), StoreSecret::NoPassphrase, &url, "bob", None)
            .await
            .map_err(fail("create bob"))?;
    // The positive control: an account name is stored in the clear, so the search must find it.
    let marker = marker_name();
    Client::create_account(&tmp.path().join("marker"), StoreSecret::NoPassphrase, &url, &marker, None)
        .await
        .map_err(fail("create the marker account"))?;
    if !json {
        println!("Created alice and bob (keys made on their devices; the server got public keys only).\n");
        println!("Transcript:");
    }

    let mut plaintexts: Vec<String> = Vec::new();
    let lines = [
        ("alice", "Hi Bob, this is Alice. Is this channel really private?"),
        ("bob", "Hi Alice! Only our two devices hold the keys."),
    ];
    for (from, text) in lines {
        plaintexts.push(text.to_owned());
        let (sender, receiver, to) =
            if from == "alice" { (&mut alice, &mut bob, "bob") } else { (&mut bob, &mut alice, "alice") };
        sender.send_text(to, text).await.map_err(fail("send"))?;
        for m in receiver.receive(Duration::from_secs(5)).await.map_err(fail("receive"))? {
            show(out, json, &m, to);
        }
    }

    // Out-of-order delivery: alice sends three, bob's device processes them last-first.
    let burst = ["Message one of three.", "Message two of three.", "Message three of three."];
    for text in burst {
        plaintexts.push(text.to_owned());
        alice.send_text("bob", text).await.map_err(fail("send"))?;
    }
    let mut envelopes = bob.fetch_envelopes().await.map_err(fail("fetch"))?;
    envelopes.reverse();
    if !json {
        println!("  (the next {} messages are delivered to bob in reverse order)", envelopes.len());
    }
    for m in bob.process_envelopes(envelopes).await.map_err(fail("process"))? {
        show(out, json, &m, "bob");
    }
    let reply = "Got all three, decrypted out of order.";
    plaintexts.push(reply.to_owned());
    bob.send_text("alice", reply).await.map_err(fail("send"))?;
    for m in alice.receive(Duration::from_secs(5)).await.map_err(fail("receive"))? {
        show(out, json, &m, "alice");
    }

    let na = alice.safety_number("bob").await.map_err(fail("safety number"))?;
    let nb = bob.safety_number("alice").await.map_err(fail("safety number"))?;
    alice.verify("bob", &nb).await.map_err(fail("verify"))?;
    bob.verify("alice", &na).await.map_err(fail("verify"))?;
    if json {
        out.raw(json!({"type": "safety_number", "name": "alice", "peer": "bob", "number": na}));
        out.raw(json!({"type": "safety_number", "name": "bob", "peer": "alice", "number": nb}));
    } else {
        println!("\nSafety numbers (compare them in person; equal on both devices):");
        println!("  alice sees: {na}");
        println!("  bob sees:   {nb}");
        println!("  both verified each other: {}", if na == nb { "match" } else { "MISMATCH" });
    }

    // Search the server's files while it runs (WAL included), stop it (it flushes and closes
    // its database), then search them again.
    let mut found = Findings::default();
    let reading = |e: std::io::Error| CliError::Local(format!("demo: reading server files: {e}"));
    search(&server_dir, &plaintexts, &marker, &mut found).map_err(reading)?;
    drop((alice, bob));
    let _ = stop.send(());
    let shutdown = match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    search(&server_dir, &plaintexts, &marker, &mut found).map_err(reading)?;
    let elapsed = started.elapsed().as_secs_f64();
    let leaked = found.leaks.iter().map(|(t, _)| t).collect::<std::collections::BTreeSet<_>>().len();
    if json {
        out.raw(json!({"type": "demo_check", "server_files": found.files, "server_bytes": found.bytes,
            "plaintexts_checked": plaintexts.len(), "plaintexts_found": leaked,
            "marker_found": !found.marker_in.is_empty(), "server_shutdown": shutdown.is_ok(),
            "seconds": elapsed}));
    } else {
        println!(
            "\nServer check: {} files, {} bytes searched (while running and after shutdown: database, WAL, \
             log), raw, hex and base64; {leaked} of {} plaintexts found in them; the planted marker found \
             in {} of them.",
            found.files,
            found.bytes,
            plaintexts.len(),
            found.marker_in.len()
        );
        for (text, path) in &found.leaks {
            println!("  LEAK: {text:?} in {path}");
        }
        println!("Done in {elapsed:.1} s.");
    }
    verdict(&found, na.eq(&nb), shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_in(files: &[(&str, &[u8])], plaintexts: &[&str], marker: &str) -> Findings {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let plaintexts: Vec<String> = plaintexts.iter().map(|s| (*s).to_owned()).collect();
        let mut f = Findings::default();
        search(dir.path(), &plaintexts, marker, &mut f).unwrap();
        f
    }

    #[test]
    fn finds_plaintext_raw_hex_and_base64_at_any_alignment() {
        let secret = "Hi Bob, this is Alice.";
        for prefix in ["", "x", "xy", "xyz"] {
            let blob = format!("{prefix}{secret}--");
            let cases = [
                blob.clone(),
                blob.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
                blob.bytes().map(|b| format!("{b:02X}")).collect::<String>(),
                STANDARD.encode(&blob),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&blob),
            ];
            for case in cases {
                let f = search_in(&[("tacit.db-wal", case.as_bytes())], &[secret], "m");
                assert_eq!(f.leaks.len(), 1, "{case:?} hides {secret:?}");
            }
        }
        let f = search_in(&[("tacit.db", b"nothing here")], &[secret], "m");
        assert!(f.leaks.is_empty());
    }

    #[test]
    fn the_demo_fails_without_the_marker_with_a_leak_or_after_a_failed_shutdown() {
        let ok = search_in(&[("server.log", b"account marker-1 created")], &["secret text"], "marker-1");
        assert!(verdict(&ok, true, Ok(())).is_ok());
        let blind = search_in(&[("server.log", b"nothing")], &["secret text"], "marker-1");
        assert!(matches!(verdict(&blind, true, Ok(())), Err(CliError::Local(_))), "no marker, no proof");
        let leak = search_in(&[("a", b"marker-1"), ("b", b"secret text")], &["secret text"], "marker-1");
        assert!(matches!(verdict(&leak, true, Ok(())), Err(CliError::Security(_))));
        assert!(matches!(verdict(&ok, false, Ok(())), Err(CliError::Security(_))));
        assert!(matches!(verdict(&ok, true, Err("store close failed".into())), Err(CliError::Server(_))));
    }
}
