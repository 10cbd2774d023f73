//! The `tacit` binary end to end against the real server on loopback (HTTP, and HTTPS with a
//! throwaway CA from `scripts/test-certs`), and `tacit demo`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a test file

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tacit_server::{Server, ServerConfig};

/// Runs `tacit --json --home HOME ARGS` with extra environment; returns the exit code and
/// the JSON lines.
fn tacit(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, Vec<Value>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacit"));
    cmd.env_remove("TACIT_PASSPHRASE").env_remove("TACIT_NEW_PASSPHRASE").env_remove("TACIT_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("--json").arg("--home").arg(home).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>();
    for l in &lines {
        assert!(l["type"].is_string(), "every line has a type: {l}");
    }
    (out.status.code().unwrap(), lines)
}

/// A server on loopback with its data in `dir` (HTTPS with `dir/tls/server.pem` when `tls`);
/// its URL, and what stops it.
async fn start_server(dir: &Path, tls: bool) -> (String, impl AsyncFnOnce()) {
    start_server_with(dir, tls, |_| {}).await
}

/// [`start_server`] with a configuration tweak.
async fn start_server_with(
    dir: &Path,
    tls: bool,
    tweak: impl FnOnce(&mut ServerConfig),
) -> (String, impl AsyncFnOnce()) {
    let mut config = ServerConfig::default();
    config.kt_epoch_interval_ms = 50;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.join("server");
    if tls {
        config.tls_cert = Some(dir.join("tls/server.pem"));
        config.tls_key = Some(dir.join("tls/server.key"));
    }
    tweak(&mut config);
    let server = Server::bind(config).await.unwrap();
    let url = format!("{}://{}", if tls { "https" } else { "http" }, server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (url, async move || {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
}

/// Creates accounts alice (home `dir/a`) and bob (`dir/b`) on `url` through the binary.
fn alice_and_bob(dir: &Path, url: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (home, name) in [(&a, "alice"), (&b, "bob")] {
        let (code, l) = tacit(home, &[], &["account", "create", "--server", url, "--name", name]);
        assert_eq!(code, 0, "{l:?}");
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path(), false).await;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let pass = [("TACIT_PASSPHRASE", "alice's secret")];

    let url2 = url.clone();
    let (a2, b2) = (a.clone(), b.clone());
    tokio::task::spawn_blocking(move || {
        let (a, b, url) = (a2, b2, url2);
        let (code, l) = tacit(&a, &pass, &["account", "create", "--server", &url, "--name", "alice"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(l[0]["type"], "account");
        assert_eq!(tacit(&b, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
        assert_eq!(tacit(&b, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 2, "exists");
        // alice's store needs the passphrase: without it, usage; with a wrong one, security.
        assert_eq!(tacit(&a, &[], &["send", "bob", "hi"]).0, 2);
        assert_eq!(tacit(&a, &[("TACIT_PASSPHRASE", "nope")], &["send", "bob", "hi"]).0, 4);
        let (code, l) = tacit(&a, &pass, &["send", "bob", "hello from the command line"]);
        assert_eq!((code, l[0]["type"].as_str()), (0, Some("sent")), "{l:?}");
        assert_eq!(tacit(&a, &pass, &["send", "nobody-here", "hi"]).0, 5);
        // Sending to one's own account is a note to self (issue 9): with no other device, it is
        // stored as sent and nothing goes to the server.
        let (code, l) = tacit(&b, &[], &["send", "bob", "a note to self"]);
        assert_eq!((code, l[0]["type"].as_str()), (0, Some("sent")), "{l:?}");
        assert_eq!(l[0]["devices"], serde_json::json!([]), "{l:?}");
        let (code, l) = tacit(&b, &[], &["history", "bob"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(
            (l[0]["direction"].as_str(), l[0]["text"].as_str()),
            (Some("sent"), Some("a note to self"))
        );
        assert!(l[0]["devices"].is_null() && l[0]["delivered"] == 0, "{l:?}");

        let (code, l) = tacit(&b, &[], &["receive", "--wait", "5"]);
        assert_eq!(code, 0);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0]["type"], "message");
        assert_eq!(l[0]["from"], "alice");
        assert_eq!(l[0]["device"], 1);
        assert_eq!(l[0]["text"], "hello from the command line");
        assert!(l[0]["server_time"].as_str().unwrap().ends_with('Z'));
        assert!(l[0]["sent_time"].as_str().unwrap().contains('T'));
        let (code, l) = tacit(&b, &[], &["receive"]);
        assert_eq!((code, l.len()), (0, 0), "nothing pending: exit 0, no lines");

        // A sender cannot paint lines on the reader's terminal (issue 8, point 5): in human
        // output a newline continues the same message, escape codes are printed escaped;
        // --json keeps the exact text.
        let spoof = "hi\n[2026-01-01T00:00:00Z] bank: send money now\x1b]0;pwned\x07\x1b[2J";
        assert_eq!(tacit(&a, &pass, &["send", "bob", spoof]).0, 0);
        let mut human = Command::new(env!("CARGO_BIN_EXE_tacit"));
        human.env_remove("TACIT_PASSPHRASE").env_remove("TACIT_HOME").arg("--home").arg(&b);
        let out = human.args(["receive", "--wait", "5"]).output().unwrap();
        let shown = String::from_utf8(out.stdout).unwrap();
        assert_eq!(shown.lines().count(), 2, "{shown:?}");
        assert!(shown.lines().nth(1).unwrap().starts_with("    | [2026-01-01T00:00:00Z] bank:"), "{shown:?}");
        assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
        assert!(shown.contains("\\u{1b}]0;pwned"), "{shown:?}");
        let (_, l) = tacit(&b, &[], &["history", "alice"]);
        assert_eq!(l.last().unwrap()["text"], spoof, "--json keeps the exact text");

        let (_, l) = tacit(&b, &[], &["history", "alice"]);
        assert_eq!(l[0]["type"], "history");
        assert_eq!(l[0]["direction"], "received");
        assert_eq!(tacit(&b, &[], &["history", "carol"]).0, 5);

        let (code, l) = tacit(&b, &[], &["safety-number", "alice"]);
        assert_eq!(code, 0);
        assert_eq!(l[0]["type"], "safety_number");
        let number = l[0]["number"].as_str().unwrap().to_owned();
        assert_eq!(number.split(' ').count(), 12);
        assert_eq!(tacit(&a, &pass, &["verify", "bob", "00000 00000"]).0, 4);
        let (code, l) = tacit(&a, &pass, &["verify", "bob", &number]);
        assert_eq!((code, l[0]["type"].as_str()), (0, Some("verified")), "{l:?}");

        // Rekey alice's store to a new passphrase, then to none.
        let (code, _) = tacit(&a, &[pass[0], ("TACIT_NEW_PASSPHRASE", "new one")], &["store", "rekey"]);
        assert_eq!(code, 0);
        assert_eq!(tacit(&a, &pass, &["history", "bob"]).0, 4, "old passphrase no longer opens it");
        let (code, _) =
            tacit(&a, &[("TACIT_PASSPHRASE", "new one"), ("TACIT_NEW_PASSPHRASE", "")], &["store", "rekey"]);
        assert_eq!(code, 0);
        assert_eq!(tacit(&a, &[], &["history", "bob"]).0, 0);

        let (code, l) = tacit(&b, &[], &["account", "delete"]);
        assert_eq!((code, l[0]["type"].as_str()), (0, Some("account_deleted")));
        assert_eq!(tacit(&b, &[], &["receive"]).0, 5);
        assert_eq!(tacit(&a, &[], &["send", "bob", "still there?"]).0, 5, "bob is gone from the server");

        let (code, l) =
            tacit(&a, &[], &["bench", "relay", "--server", &url, "--clients", "3", "--messages", "30"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(l[0]["type"], "bench_relay");
        assert_eq!(l[0]["delivered"], 30);
        assert!(l[0]["delivered_per_s"].as_f64().unwrap() > 0.0);
        assert!(l[0]["p99_ms"].as_f64().unwrap() >= l[0]["p50_ms"].as_f64().unwrap());
        assert_eq!((l[0]["transport"].as_str(), l[0]["window"].as_u64()), (Some("websocket"), Some(1)));
        let args =
            ["bench", "relay", "--server", &url, "--clients", "3", "--messages", "31", "--window", "4"];
        let (code, l) = tacit(&a, &[], &args);
        assert_eq!((code, l[0]["delivered"].as_u64()), (0, Some(31)), "{l:?}");
        let (code, l) = tacit(&a, &[], &[&args[..], &["--http"]].concat());
        assert_eq!((code, l[0]["delivered"].as_u64()), (0, Some(31)), "{l:?}");
        assert_eq!(l[0]["transport"], "http");
    })
    .await
    .unwrap();
    stop().await;
}

/// Bob reinstalls (deletes his account, creates it again under the same name) and writes
/// first. Unverified, alice's `receive` prints the identity-change warning and the message;
/// after alice verifies him and he reinstalls once more, `receive` holds the message (a
/// warning, no message line, exit 0) until `verify` with the new number, then prints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_who_reinstalls_and_writes_first_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path(), false).await;
    let home = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let (a, b) = alice_and_bob(&home, &url);
        assert_eq!(tacit(&b, &[], &["send", "alice", "hello"]).0, 0);
        assert_eq!(tacit(&a, &[], &["receive"]).1.len(), 1);
        let reinstall = || {
            assert_eq!(tacit(&b, &[], &["account", "delete"]).0, 0);
            assert_eq!(tacit(&b, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
        };
        let kinds =
            |l: &[Value]| l.iter().map(|v| v["type"].as_str().unwrap().to_owned()).collect::<Vec<_>>();

        reinstall();
        assert_eq!(tacit(&b, &[], &["send", "alice", "new phone"]).0, 0);
        let (code, l) = tacit(&a, &[], &["receive"]);
        assert_eq!((code, kinds(&l)), (0, vec!["warning".to_owned(), "message".to_owned()]), "{l:?}");
        assert!(l[0]["message"].as_str().unwrap().contains("bob's identity key changed"), "{l:?}");
        assert_eq!(l[1]["text"], "new phone");

        let (_, l) = tacit(&b, &[], &["safety-number", "alice"]);
        let number = l[0]["number"].as_str().unwrap().to_owned();
        assert_eq!(tacit(&a, &[], &["verify", "bob", &number]).0, 0);
        reinstall();
        assert_eq!(tacit(&b, &[], &["send", "alice", "newer phone"]).0, 0);
        for _ in 0..2 {
            let (code, l) = tacit(&a, &[], &["receive"]);
            assert_eq!((code, kinds(&l)), (0, vec!["warning".to_owned()]), "held: {l:?}");
            assert!(l[0]["message"].as_str().unwrap().contains("holding messages from bob"), "{l:?}");
        }
        assert_eq!(tacit(&a, &[], &["send", "bob", "who is this?"]).0, 4);
        let (_, l) = tacit(&b, &[], &["safety-number", "alice"]);
        let number = l[0]["number"].as_str().unwrap().to_owned();
        assert_eq!(tacit(&a, &[], &["verify", "bob", &number]).0, 0);
        let (code, l) = tacit(&a, &[], &["receive"]);
        assert_eq!((code, kinds(&l)), (0, vec!["message".to_owned()]), "{l:?}");
        assert_eq!(l[0]["text"], "newer phone");
    })
    .await
    .unwrap();
    stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_interrupted_before_the_database_changed_key_still_opens_with_the_old_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path(), false).await;
    let home = dir.path().join("a");
    tokio::task::spawn_blocking(move || {
        let pass = [("TACIT_PASSPHRASE", "old secret")];
        assert_eq!(tacit(&home, &pass, &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
        // What `store rekey` to no passphrase leaves when killed after writing the new key
        // file and before the database took it: store.salt and store.key.new.
        let new_key = home.join("store.key.new");
        std::fs::write(&new_key, format!("{}\n", "ab".repeat(32))).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&new_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        // Without the passphrase: the key file does not open it, so the passphrase is asked for.
        let (code, l) = tacit(&home, &[], &["receive"]);
        assert_eq!((code, l[0]["kind"].as_str()), (2, Some("usage")), "{l:?}");
        let (code, l) = tacit(&home, &pass, &["receive"]);
        assert_eq!(code, 0, "{l:?}");
        assert!(!new_key.exists(), "the leftover of the interrupted rekey is gone");
        let (code, _) = tacit(&home, &[pass[0], ("TACIT_NEW_PASSPHRASE", "")], &["store", "rekey"]);
        assert_eq!(code, 0);
        assert_eq!(tacit(&home, &[], &["receive"]).0, 0);
    })
    .await
    .unwrap();
    stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_with_tacit_ca_file_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-certs");
    let made = Command::new("bash").arg(certs).arg(dir.path().join("tls")).status().unwrap();
    assert!(made.success());
    let (url, stop) = start_server(dir.path(), true).await;
    let home = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let (a, b) = (home.join("a"), home.join("b"));
        let (ca, other) = (home.join("tls/ca.pem"), home.join("tls/other-ca.pem"));
        let trust = [("TACIT_CA_FILE", ca.to_str().unwrap())];
        let create = ["account", "create", "--server", &url, "--name", "alice"];
        let (code, l) = tacit(&a, &[], &create);
        assert_eq!(code, 3, "{l:?}");
        assert!(l[0]["message"].as_str().unwrap().contains("certificate"), "{l:?}");
        let (code, l) = tacit(&a, &[("TACIT_CA_FILE", other.to_str().unwrap())], &create);
        assert_eq!(code, 3, "{l:?}");
        let (code, l) =
            tacit(&a, &[("TACIT_CA_FILE", home.join("tls/server.key").to_str().unwrap())], &create);
        assert_eq!((code, l[0]["kind"].as_str()), (2, Some("usage")), "not a certificate: {l:?}");
        assert_eq!(tacit(&a, &trust, &create).0, 0);
        let ca_flag = ["--ca-file", ca.to_str().unwrap()];
        let create_bob = [&ca_flag[..], &["account", "create", "--server", &url, "--name", "bob"]].concat();
        assert_eq!(tacit(&b, &[], &create_bob).0, 0);

        let (code, l) = tacit(&a, &trust, &["send", "bob", "over https"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(tacit(&b, &[], &["receive", "--wait", "5"]).0, 3, "without the CA: refused");
        let (code, l) = tacit(&b, &trust, &["receive", "--wait", "5"]);
        assert_eq!((code, l[0]["text"].as_str()), (0, Some("over https")), "over wss: {l:?}");
    })
    .await
    .unwrap();
    stop().await;
}

#[test]
fn the_demo_runs_and_finds_no_plaintext_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let (code, l) = tacit(dir.path(), &[], &["demo"]);
    assert_eq!(code, 0, "{l:?}");
    assert!(start.elapsed().as_secs() < 10);
    let check = l.iter().find(|v| v["type"] == "demo_check").unwrap();
    assert_eq!(check["plaintexts_found"], 0);
    assert_eq!(check["marker_found"], true, "the positive control: {check}");
    assert_eq!(check["server_shutdown"], true);
    assert!(check["plaintexts_checked"].as_u64().unwrap() >= 6);
    let numbers: Vec<_> =
        l.iter().filter(|v| v["type"] == "safety_number").map(|v| v["number"].clone()).collect();
    assert_eq!(numbers.len(), 2);
    assert_eq!(numbers[0], numbers[1]);
    assert_eq!(l.iter().filter(|v| v["type"] == "demo_message").count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_relay_over_the_account_budget_says_which_setting_to_raise() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server_with(dir.path(), false, |c| c.limits.account_creation_burst = 2).await;
    let home = dir.path().join("h");
    let (code, l) =
        tacit(&home, &[], &["bench", "relay", "--server", &url, "--clients", "3", "--messages", "3"]);
    assert_eq!(code, 3, "{l:?}");
    assert!(l[0]["message"].as_str().unwrap().contains("account_creation_burst"), "{l:?}");
    stop().await;
}

/// `bench relay --abuse`: the same load quiet and under a flood from 127.0.0.2 that reaches
/// for the limits in the server's config file (here lowered, so the flood is refused within
/// the run); every honest message is delivered in both runs, and the flood really ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_relay_abuse_floods_from_another_address_and_honest_clients_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tacit.toml");
    std::fs::write(
        &file,
        "max_connections_per_address = 60\n[limits]\naccount_creation_burst = 20\naddress_request_burst = 50\n\
         address_requests_per_second = 50\n",
    )
    .unwrap();
    let config = ServerConfig::load(&file).unwrap();
    let (url, stop) = start_server_with(dir.path(), false, |c| {
        c.limits = config.limits;
        c.max_connections_per_address = config.max_connections_per_address;
    })
    .await;
    let home = dir.path().join("h");
    let f = file.to_str().unwrap().to_owned();
    let (code, l) = tokio::task::spawn_blocking(move || {
        let args = ["bench", "relay", "--server", &url, "--clients", "4", "--messages", "200", "--abuse"];
        tacit(&home, &[], &[&args[..], &["--server-config", &f, "--flood-accounts", "1"]].concat())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{l:?}");
    let r = &l[0];
    assert_eq!(r["type"], "bench_relay_abuse");
    assert_eq!((r["quiet"]["delivered"].as_u64(), r["abuse"]["delivered"].as_u64()), (Some(200), Some(200)));
    let flood = &r["flood"];
    assert_eq!(flood["from"], "127.0.0.2");
    assert!(flood["connections"]["peak_open"].as_u64().unwrap() > 0, "{flood}");
    assert_eq!(flood["connections"]["cap_per_address"], 60, "the flooder read the server's file");
    assert!(flood["account_creations"]["ok"].as_u64().unwrap() > 0, "{flood}");
    assert!(flood["account_creations"]["refused"].as_u64().unwrap() > 0, "over the burst of 20: {flood}");
    let reads = &flood["device_list_reads"];
    assert!(reads["ok"].as_u64().unwrap() + reads["not_found"].as_u64().unwrap() > 0, "{flood}");
    assert!(flood["ack_frames"]["frames"].as_u64().unwrap() > 0, "{flood}");
    // The flooder's address must differ from the honest clients'.
    let args = ["bench", "relay", "--server", "http://127.0.0.1:1", "--clients", "2", "--messages", "2"];
    let (code, _) = tacit(dir.path(), &[], &[&args[..], &["--abuse", "--flood-from", "127.0.0.1"]].concat());
    assert_eq!(code, 2);
    stop().await;
}

/// Issue 8, point 6: `history` is oldest first by the server's clock, not in the order the
/// messages reached this device: a reply written before the other side's messages were
/// received sorts between them on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_in_server_time_order_with_interleaved_sends_and_receives() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path(), false).await;
    let home = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let (a, b) = alice_and_bob(&home, &url);
        // Each writes before reading what the other wrote.
        assert_eq!(tacit(&a, &[], &["send", "bob", "a1"]).0, 0);
        assert_eq!(tacit(&b, &[], &["send", "alice", "b1"]).0, 0);
        assert_eq!(tacit(&a, &[], &["send", "bob", "a2"]).0, 0);
        assert_eq!(tacit(&b, &[], &["send", "alice", "b2"]).0, 0);
        assert_eq!(tacit(&b, &[], &["receive"]).1.len(), 2);
        assert_eq!(tacit(&a, &[], &["receive"]).1.len(), 2);
        for (home, peer) in [(&a, "bob"), (&b, "alice")] {
            let (code, l) = tacit(home, &[], &["history", peer]);
            assert_eq!(code, 0, "{l:?}");
            let texts: Vec<_> = l.iter().map(|v| v["text"].as_str().unwrap()).collect();
            assert_eq!(texts, ["a1", "b1", "a2", "b2"], "{peer}'s view: {l:?}");
            assert!(l.iter().all(|v| v["server_time"].is_string()), "all confirmed: {l:?}");
        }
        // Delivery receipts (issue 9): bob's receive receipted a1 and a2, which alice's receive
        // recorded; alice's receipts for b1 and b2 wait for bob's next receive.
        let delivered = |home: &std::path::Path, peer: &str| {
            let (_, l) = tacit(home, &[], &["history", peer]);
            l.iter()
                .filter(|v| v["direction"] == "sent")
                .map(|v| (v["delivered"].as_u64().unwrap(), v["devices"].as_u64().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(delivered(&a, "bob"), [(1, 1), (1, 1)]);
        assert_eq!(delivered(&b, "alice"), [(0, 1), (0, 1)]);
        assert!(tacit(&b, &[], &["receive"]).1.is_empty(), "receipts are not messages");
        assert_eq!(delivered(&b, "alice"), [(1, 1), (1, 1)]);
    })
    .await
    .unwrap();
    stop().await;
}

/// Issue 8, point 8: a server's refusals read as sentences that name the cause: a missing
/// registration token, a wrong one, a name taken (never `Some(NameTaken)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) =
        start_server_with(dir.path(), false, |c| c.registration_token = Some("open sesame".into())).await;
    let home = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let create = |h: &str, token: Option<&str>| {
            let mut args = vec!["account", "create", "--server", &url, "--name", "alice"];
            if let Some(t) = token {
                args.extend(["--registration-token", t]);
            }
            let (code, l) = tacit(&home.join(h), &[], &args);
            let message = l.first().and_then(|v| v["message"].as_str()).unwrap_or_default().to_owned();
            assert!(!message.contains("Some(") && !message.contains("None"), "{message}");
            (code, message)
        };
        let (code, message) = create("a", None);
        assert_eq!(code, 3, "{message}");
        assert!(message.contains("requires a registration token"), "{message}");
        let (code, message) = create("a", Some("open barley"));
        assert_eq!(code, 3, "{message}");
        assert!(message.contains("registration token is wrong"), "{message}");
        assert_eq!(create("a", Some("open sesame")).0, 0);
        let (code, message) = create("b", Some("open sesame"));
        assert_eq!(code, 3, "{message}");
        assert!(message.contains("the name alice is taken on this server"), "{message}");
    })
    .await
    .unwrap();
    stop().await;
}

/// Issue 11 through the binary: `group create/add/remove/leave/list/members/send`,
/// `history --group`, and `receive`'s group lines, as docs/CLI.md writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_conversation_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path(), false).await;
    let d = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let (a, b) = alice_and_bob(&d, &url);
        let c = d.join("c");
        assert_eq!(tacit(&c, &[], &["account", "create", "--server", &url, "--name", "carol"]).0, 0);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (code, l) = tacit(&a, &[], &["group", "create", "family", "--members", "bob"]);
        assert_eq!(code, 0, "{l:?}");
        let g = l.iter().find(|l| l["type"] == "group").unwrap();
        assert_eq!((g["name"].as_str(), g["epoch"].as_u64()), (Some("family"), Some(1)));
        assert_eq!(
            g["members"],
            serde_json::json!([{"account": "alice", "device": 1}, {"account": "bob", "device": 1}])
        );
        let (code, l) = tacit(&b, &[], &["receive"]);
        assert_eq!(code, 0, "{l:?}");
        assert!(
            l.iter().any(|l| l["type"] == "group_event"
                && l["event"] == "joined"
                && l["group"] == "family"
                && l["by"] == "alice"),
            "{l:?}"
        );
        let (code, l) = tacit(&b, &[], &["group", "send", "family", "hi all"]);
        assert_eq!(
            (code, l[0]["type"].as_str(), l[0]["group"].as_str()),
            (0, Some("sent"), Some("family")),
            "{l:?}"
        );
        let (_, l) = tacit(&a, &[], &["receive"]);
        let m = l.iter().find(|l| l["type"] == "message").unwrap();
        assert_eq!(
            (m["group"].as_str(), m["from"].as_str(), m["text"].as_str()),
            (Some("family"), Some("bob"), Some("hi all"))
        );
        assert!(m["server_time"].is_string() && m["sent_time"].is_string() && m["device"] == 1);
        // Carol is added, then removed.
        let (code, l) = tacit(&a, &[], &["group", "add", "family", "carol"]);
        assert_eq!(code, 0, "{l:?}");
        let (_, l) = tacit(&c, &[], &["receive"]);
        assert!(l.iter().any(|l| l["type"] == "group_event" && l["event"] == "joined"), "{l:?}");
        let (_, l) = tacit(&b, &[], &["receive"]);
        assert!(
            l.iter().any(|l| l["type"] == "group_event"
                && l["event"] == "added"
                && l["devices"] == serde_json::json!([{"account": "carol", "device": 1}])),
            "{l:?}"
        );
        let (code, l) = tacit(&c, &[], &["group", "members", "family"]);
        assert_eq!((code, l.iter().filter(|l| l["type"] == "member").count()), (0, 3), "{l:?}");
        assert_eq!(tacit(&a, &[], &["group", "remove", "family", "carol"]).0, 0);
        let (_, l) = tacit(&c, &[], &["receive"]);
        assert!(l.iter().any(|l| l["type"] == "group_event" && l["event"] == "removed_me"), "{l:?}");
        let (code, l) = tacit(&c, &[], &["group", "list"]);
        assert_eq!((code, l.len()), (0, 0), "{l:?}");
        // Bob replaces his keys by hand: the next epoch, for Alice too, with no event.
        let (_, l) = tacit(&a, &[], &["receive"]);
        assert!(!l.iter().any(|l| l["type"] == "group_event"), "{l:?}");
        let (_, before) = tacit(&a, &[], &["group", "list"]);
        let (code, l) = tacit(&b, &[], &["group", "update", "family"]);
        assert_eq!((code, l[0]["type"].as_str()), (0, Some("group")), "{l:?}");
        assert_eq!(l[0]["epoch"].as_u64(), before[0]["epoch"].as_u64().map(|e| e + 1), "{l:?} {before:?}");
        let (_, l) = tacit(&a, &[], &["receive"]);
        assert!(!l.iter().any(|l| l["type"] == "group_event"), "{l:?}");
        let (_, after) = tacit(&a, &[], &["group", "list"]);
        assert_eq!(after[0]["epoch"].as_u64(), before[0]["epoch"].as_u64().map(|e| e + 1), "{after:?}");
        assert_eq!(tacit(&b, &[], &["group", "update", "nope"]).0, 5);
        // A group name out of its bounds is a usage error (exit 2), nothing made.
        assert_eq!(tacit(&a, &[], &["group", "create", &"x".repeat(129), "--members", "bob"]).0, 2);
        assert_eq!(tacit(&a, &[], &["group", "rename", "family", "bad\u{7}name"]).0, 2);
        // History, unknown groups, and leaving.
        let (code, l) = tacit(&a, &[], &["history", "--group", "family"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(
            (l[0]["group"].as_str(), l[0]["direction"].as_str(), l[0]["text"].as_str()),
            (Some("family"), Some("received"), Some("hi all"))
        );
        assert_eq!(tacit(&a, &[], &["group", "send", "nope", "x"]).0, 5);
        assert_eq!(tacit(&a, &[], &["history"]).0, 2);
        let (code, l) = tacit(&b, &[], &["group", "leave", "family"]);
        assert_eq!((code, l[0]["type"].as_str()), (0, Some("left")), "{l:?}");
        let (code, l) = tacit(&b, &[], &["group", "list"]);
        assert_eq!((code, l.len()), (0, 0), "{l:?}");
        // Alice commits Bob's leaving when she next receives; she is alone after.
        let (code, l) = tacit(&a, &[], &["receive"]);
        assert_eq!(code, 0, "{l:?}");
        let (_, l) = tacit(&a, &[], &["group", "members", "family"]);
        assert_eq!(l.iter().filter(|l| l["type"] == "member").count(), 1, "{l:?}");
        let (code, l) = tacit(&a, &[], &["group", "rename", "family", "just me"]);
        assert_eq!(
            (code, l[0]["type"].as_str(), l[0]["name"].as_str()),
            (0, Some("group"), Some("just me")),
            "{l:?}"
        );
        let (_, l) = tacit(&a, &[], &["group", "list"]);
        assert_eq!(l[0]["name"], "just me", "{l:?}");
    })
    .await
    .unwrap();
    stop().await;
}

/// A group member's home put back from a copy (`cp -a` of the folder): `group send` refuses
/// with a network-kind error (exit 3) that says what happens, the members take the device
/// back in on their next `receive` (`"event":"rejoined"`), and the device's next `receive`
/// says so (`"event":"rejoined_me"`); it sends and reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_restored_from_a_copy_is_taken_back_in() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path(), false).await;
    let d = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let (a, b) = alice_and_bob(&d, &url);
        let c = d.join("c");
        assert_eq!(tacit(&c, &[], &["account", "create", "--server", &url, "--name", "carol"]).0, 0);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(tacit(&a, &[], &["group", "create", "family", "--members", "bob,carol"]).0, 0);
        assert_eq!(tacit(&b, &[], &["receive"]).0, 0);
        assert_eq!(tacit(&c, &[], &["receive"]).0, 0);
        let copy = d.join("b-copy");
        assert!(Command::new("cp").arg("-a").arg(&b).arg(&copy).status().unwrap().success());
        assert_eq!(tacit(&b, &[], &["group", "send", "family", "after the copy"]).0, 0);
        assert_eq!(tacit(&a, &[], &["receive"]).0, 0);
        std::fs::remove_dir_all(&b).unwrap();
        assert!(Command::new("cp").arg("-a").arg(&copy).arg(&b).status().unwrap().success());

        let out = Command::new(env!("CARGO_BIN_EXE_tacit"))
            .arg("--home")
            .arg(&b)
            .args(["group", "send", "family", "from the copy"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("being re-added to group family") && stderr.contains("tacit receive"),
            "{stderr}"
        );
        let (_, l) = tacit(&a, &[], &["receive"]);
        assert!(!l.iter().any(|l| l["type"] == "message"), "{l:?}");
        let (_, l) = tacit(&c, &[], &["receive"]);
        assert!(
            l.iter().any(|l| l["type"] == "group_event"
                && l["event"] == "rejoined"
                && l["by"] == "alice"
                && l["devices"] == serde_json::json!([{"account": "bob", "device": 1}])),
            "{l:?}"
        );
        let (_, l) = tacit(&b, &[], &["receive"]);
        assert!(
            l.iter().any(|l| l["type"] == "group_event"
                && l["event"] == "rejoined_me"
                && l["group"] == "family"
                && l["by"] == "alice"),
            "{l:?}"
        );
        assert_eq!(tacit(&b, &[], &["group", "send", "family", "back"]).0, 0);
        for home in [&a, &c] {
            let (_, l) = tacit(home, &[], &["receive"]);
            assert!(l.iter().any(|l| l["type"] == "message" && l["text"] == "back"), "{l:?}");
        }
    })
    .await
    .unwrap();
    stop().await;
}
