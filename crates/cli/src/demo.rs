//! `tacit demo`: an embedded server on a free loopback port in a temporary folder, alice and
//! bob, a conversation with out-of-order delivery, both safety numbers, and a final check that
//! none of the plaintext is anywhere in the server's files.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tacit_client::{Client, ReceivedMessage, StoreSecret};
use tacit_server::{Server, ServerConfig};

use crate::CliError;
use crate::output::{Out, rfc3339};

fn fail(what: &str) -> impl FnOnce(tacit_client::ClientError) -> CliError + '_ {
    move |e| CliError::Local(format!("demo: {what}: {e}"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
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

    // Stop the server (it flushes and closes its database), then search its files.
    drop((alice, bob));
    let _ = stop.send(());
    let _ = task.await;
    let mut stored = Vec::new();
    files(&server_dir, &mut stored)
        .map_err(|e| CliError::Local(format!("demo: reading server files: {e}")))?;
    let total: usize = stored.iter().map(|(_, b)| b.len()).sum();
    let leaks: Vec<_> = plaintexts
        .iter()
        .filter(|t| stored.iter().any(|(_, b)| contains(b, t.as_bytes())))
        .cloned()
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        out.raw(json!({"type": "demo_check", "server_files": stored.len(), "server_bytes": total,
            "plaintexts_checked": plaintexts.len(), "plaintexts_found": leaks.len(), "seconds": elapsed}));
    } else {
        println!(
            "\nServer check: {} files, {total} bytes stored; {} of {} plaintexts found in them.",
            stored.len(),
            leaks.len(),
            plaintexts.len()
        );
        println!("Done in {elapsed:.1} s.");
    }
    if !na.eq(&nb) || !leaks.is_empty() {
        return Err(CliError::Security("demo check failed".into()));
    }
    Ok(())
}
