//! Issue 10 end to end with the real binary, a real server process and Cloudflare's `plexi`
//! 0.1.2 (installed by `scripts/test`; a run without it fails saying so, unless
//! `TACIT_SKIP_PLEXI=1`): `tacit kt export` writes what `plexi local-audit` verifies, and
//! one flipped bit in the proof or the signature makes it fail; `tacit audit` verifies every
//! epoch, keeps its state, countersigns, and exits 4 on a violation (a newest epoch older
//! than one audited, a rewritten root) and 3 when the server is unreachable; `tacit kt
//! status` and `kt history`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

/// The `plexi` binary, or `None` when the run may skip it.
fn plexi() -> Option<String> {
    let found = Command::new("plexi").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return Some("plexi".into());
    }
    assert!(
        std::env::var("TACIT_SKIP_PLEXI").is_ok_and(|v| v == "1"),
        "plexi is not installed: `bash scripts/test` installs it (cargo install --locked plexi, which needs \
         Debian's protobuf-compiler); set TACIT_SKIP_PLEXI=1 to run without it"
    );
    None
}

/// `plexi local-audit` on an exported folder: its standard output (plexi prints "success" or
/// "failed - ..." and exits 0 either way; an unparsable proof exits 1).
fn local_audit(plexi: &str, dir: &Path, proof: &Path, signature: &Path) -> String {
    let key = std::fs::read_to_string(dir.join("verifying_key.hex")).unwrap();
    let out = Command::new(plexi)
        .args(["local-audit", "--verifying-key", key.trim(), "--proof-path"])
        .arg(proof)
        .arg(signature)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() { stdout } else { format!("exit {:?}: {stdout}", out.status.code()) }
}

fn flip(from: &Path, to: &Path, at: usize) {
    let mut b = std::fs::read(from).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 1;
    std::fs::write(to, b).unwrap();
}

#[test]
fn exported_epochs_pass_plexi_and_tacit_audit_and_tampering_fails_both() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback(&dir.path().join("data"));
    let url = format!("http://{}", server.addr);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    assert_eq!(tacit(&alice, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    assert_eq!(tacit(&alice, &[], &["send", "bob", "hi"]).0, 0);

    // kt status: pinned key, newest epoch, own history checked without alarm.
    let (rc, l) = tacit(&alice, &[], &["kt", "status"]);
    assert_eq!(rc, 0, "{l:?}");
    let status = l.iter().find(|l| l["type"] == "kt_status").unwrap();
    let key = status["public_key"].as_str().unwrap().to_owned();
    let newest = status["newest_epoch"].as_u64().unwrap();
    assert!(newest >= 1);
    assert_eq!(status["own_history"]["alarms"].as_array().unwrap().len(), 0);
    let (rc, l) = tacit(&alice, &[], &["kt", "history", "bob"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l.iter().filter(|l| l["type"] == "kt_version").count(), 1);
    // --kt-key: the right key passes, another one is refused (exit 4).
    assert_eq!(tacit(&alice, &[], &["--kt-key", &key, "kt", "status"]).0, 0);
    assert_eq!(tacit(&alice, &[], &["--kt-key", &"ab".repeat(32), "kt", "status"]).0, 4);

    // tacit audit: from nothing to the newest epoch, countersigned; again: nothing new.
    let state = dir.path().join("audit.json");
    let keyfile = dir.path().join("auditor.key");
    let (rc, l) = tacit(
        &alice,
        &[],
        &[
            "audit",
            "--server",
            &url,
            "--state",
            state.to_str().unwrap(),
            "--cosign",
            keyfile.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!((l[0]["from"].as_u64(), l[0]["to"].as_u64()), (Some(1), Some(newest)));
    assert_eq!(l[0]["cosigned"].as_u64(), Some(newest));
    assert!(dir.path().join("audit.json.d/audits").join(format!("{newest}.json")).exists());
    let (rc, l) = tacit(&alice, &[], &["audit", "--server", &url, "--state", state.to_str().unwrap()]);
    assert_eq!((rc, l[0]["epochs"].as_u64()), (0, Some(0)), "{l:?}");

    // A state that audited further than the server's newest epoch: a rollback, exit 4. A
    // state whose root differs for its epoch: a rewrite, exit 4.
    let saved = std::fs::read_to_string(&state).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&saved).unwrap();
    v["epoch"] = (newest + 5).into();
    std::fs::write(&state, v.to_string()).unwrap();
    let (rc, l) = tacit(&alice, &[], &["audit", "--server", &url, "--state", state.to_str().unwrap()]);
    assert_eq!(rc, 4, "{l:?}");
    assert!(l[0]["message"].as_str().unwrap().contains("rollback"), "{l:?}");
    let mut v: serde_json::Value = serde_json::from_str(&saved).unwrap();
    v["root"] = "00".repeat(32).into();
    std::fs::write(&state, v.to_string()).unwrap();
    let (rc, l) = tacit(&alice, &[], &["audit", "--server", &url, "--state", state.to_str().unwrap()]);
    assert_eq!(rc, 4, "{l:?}");
    assert!(l[0]["message"].as_str().unwrap().contains("rewrite"), "{l:?}");
    std::fs::write(&state, &saved).unwrap();

    // plexi on exported epochs: success; one flipped bit in the proof or the signature: not.
    let plexi = plexi();
    for epoch in 1..=newest {
        let out = dir.path().join(format!("export-{epoch}"));
        let (rc, l) = tacit(
            &alice,
            &[],
            &["kt", "export", "--epoch", &epoch.to_string(), "--out", out.to_str().unwrap()],
        );
        assert_eq!(rc, 0, "{l:?}");
        let Some(plexi) = plexi.as_deref() else { continue };
        let good = local_audit(plexi, &out, &out.join("proof.bin"), &out.join("signature.json"));
        assert!(good.contains("success"), "epoch {epoch}: {good}");
        let len = std::fs::metadata(out.join("proof.bin")).unwrap().len() as usize;
        for at in [len / 3, len / 2, len - 3] {
            flip(&out.join("proof.bin"), &out.join("bad.bin"), at);
            let bad = local_audit(plexi, &out, &out.join("bad.bin"), &out.join("signature.json"));
            assert!(!bad.contains("success"), "epoch {epoch}, bit flipped at {at}: {bad}");
        }
        let mut sig: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("signature.json")).unwrap()).unwrap();
        let s = sig["signature"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if s.starts_with('0') { "1" } else { "0" }, &s[1..]);
        sig["signature"] = flipped.into();
        std::fs::write(out.join("bad.json"), sig.to_string()).unwrap();
        let bad = local_audit(plexi, &out, &out.join("proof.bin"), &out.join("bad.json"));
        assert!(bad.contains("failed"), "epoch {epoch}, signature flipped: {bad}");
    }

    // tacit audit --serve: plexi audit --remote-url verifies every countersigned epoch (its
    // signature under the auditor's key from /info, and the log's append-only proof fetched
    // from the server by blob name); a countersignature with a flipped digest fails.
    if let Some(plexi) = plexi.as_deref() {
        let mut child = spawn_tacit(
            &alice,
            &[
                "audit",
                "--state",
                state.to_str().unwrap(),
                "--cosign",
                keyfile.to_str().unwrap(),
                "--serve",
                "127.0.0.1:0",
            ],
        );
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut lines, &mut first).unwrap();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["type"], "audit_serving", "{first}");
        let remote = format!("http://{}", v["listen"].as_str().unwrap());
        let ns = status["namespace"].as_str().unwrap();
        let audit = |epoch: u64| {
            let out = Command::new(plexi)
                .args(["audit", "--remote-url", &remote, "--namespace", ns, "--epoch", &epoch.to_string()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        for epoch in 1..=newest {
            let got = audit(epoch);
            assert!(got.contains("success"), "plexi audit of epoch {epoch}: {got}");
        }
        let file = dir.path().join("audit.json.d/audits").join(format!("{newest}.json"));
        let good = std::fs::read_to_string(&file).unwrap();
        let mut sig: serde_json::Value = serde_json::from_str(&good).unwrap();
        let d = sig["digest"].as_str().unwrap().to_owned();
        sig["digest"] = format!("{}{}", if d.starts_with('0') { "1" } else { "0" }, &d[1..]).into();
        std::fs::write(&file, sig.to_string()).unwrap();
        let got = audit(newest);
        assert!(got.contains("failed"), "a tampered countersignature: {got}");
        std::fs::write(&file, good).unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    // The server gone: exit 3.
    server.stop();
    let (rc, _) = tacit(&alice, &[], &["audit", "--server", &url, "--state", state.to_str().unwrap()]);
    assert_eq!(rc, 3);
}

/// A server killed with SIGKILL (not stopped) right after accounts are created, while their
/// epoch is being published, six times over: every account reaches the directory once the
/// server runs again (its history proof verifies), and an auditor finds every epoch signed
/// and append-only.
#[test]
fn a_server_killed_while_publishing_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let (args, url) = restartable_server(dir.path(), None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = || ServerProcess::start(&args, None);
    let mut names = Vec::new();
    for round in 0..6 {
        let server = start();
        for i in 0..2 {
            let name = format!("k{round}x{i}");
            let home = dir.path().join(&name);
            let (rc, l) = tacit(&home, &[], &["account", "create", "--server", &url, "--name", &name]);
            assert_eq!(rc, 0, "{l:?}");
            names.push(name);
        }
        // Within the 50 ms epoch interval the tests use: often in the middle of publishing.
        std::thread::sleep(Duration::from_millis(10 * round));
        server.signal("KILL");
        drop(server);
    }
    let server = start();
    let checker = dir.path().join("checker");
    assert_eq!(tacit(&checker, &[], &["account", "create", "--server", &url, "--name", "checker"]).0, 0);
    for name in &names {
        wait_published(&checker, name, &server);
    }
    let state = dir.path().join("audit.json");
    let (rc, l) = tacit(&checker, &[], &["audit", "--server", &url, "--state", state.to_str().unwrap()]);
    assert_eq!(rc, 0, "{l:?}");
    assert!(l[0]["to"].as_u64().unwrap() >= 1, "{l:?}");
    server.stop();
}

/// `tacit audit --log-dir` audits a log that akd's own API wrote (its `generate_audit_blobs`,
/// WhatsApp's layout), not only Tacit's; with the proofs of two epochs swapped it refuses
/// (exit 4).
#[test]
fn a_log_written_by_akd_is_audited_and_a_swapped_blob_is_refused() {
    use akd::storage::StorageManager;
    use akd::storage::memory::AsyncInMemoryDatabase;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let names = rt.block_on(async {
        let d = akd::Directory::<tacit_transparency::Config, _, _>::new(
            StorageManager::new_no_cache(AsyncInMemoryDatabase::new()),
            akd::ecvrf::HardCodedAkdVRF,
            akd::AzksParallelismConfig::default(),
        )
        .await
        .unwrap();
        let mut hashes = vec![d.get_epoch_hash().await.unwrap().1];
        for e in 0..5u8 {
            let updates =
                (0..10u8).map(|i| (akd::AkdLabel(vec![b'u', e, i]), akd::AkdValue(vec![e, i]))).collect();
            d.publish(updates).await.unwrap();
            hashes.push(d.get_epoch_hash().await.unwrap().1);
        }
        let proof = d.audit(0, 5).await.unwrap();
        let blobs = akd::local_auditing::generate_audit_blobs(hashes, proof).unwrap();
        let mut names = Vec::new();
        for b in blobs {
            let path = log.join(b.name.to_string());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &b.data).unwrap();
            names.push(path);
        }
        names
    });
    let home = dir.path().join("nobody");
    let (rc, l) = tacit(&home, &[], &["audit", "--log-dir", log.to_str().unwrap()]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(
        (l[0]["from"].as_u64(), l[0]["to"].as_u64(), l[0]["epochs"].as_u64()),
        (Some(1), Some(5), Some(5))
    );
    // Two epochs' proofs swapped: refused.
    let (a, b) = (std::fs::read(&names[1]).unwrap(), std::fs::read(&names[2]).unwrap());
    std::fs::write(&names[1], &b).unwrap();
    std::fs::write(&names[2], &a).unwrap();
    let (rc, l) = tacit(&home, &[], &["audit", "--log-dir", log.to_str().unwrap()]);
    assert_eq!(rc, 4, "{l:?}");
    assert!(l[0]["message"].as_str().unwrap().contains("append-only"), "{l:?}");
}

/// Auditors required by a client, across real processes: the auditor's key listed by the
/// server (`--kt-auditor`), `tacit audit --cosign` posts its cosignature of the newest root,
/// and `tacit --require-auditor KEY send` goes through only while the root of the lookup it
/// makes carries it: a new epoch the auditor has not reached is refused after the wait
/// (exit 4, `"violation":"not-cosigned"`, nothing sent), and sent once audited. A server
/// that does not list the auditor does not take its cosignature (said, not a violation); a
/// threshold above the keys given is a usage error (exit 2).
#[test]
fn a_client_requiring_an_auditor_sends_only_under_roots_it_cosigned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let (alice, bob, carol) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("carol"));
    let (state, keyfile) = (dir.path().join("audit.json"), dir.path().join("auditor.key"));
    let audit = || {
        let (rc, l) = tacit(
            &alice,
            &[],
            &[
                "audit",
                "--server",
                &url,
                "--state",
                state.to_str().unwrap(),
                "--cosign",
                keyfile.to_str().unwrap(),
            ],
        );
        assert_eq!(rc, 0, "{l:?}");
        l[0].clone()
    };
    // A server that lists no auditor: the cosignature is not taken, and that is said.
    let server = ServerProcess::start(&["--listen", &listen, "--data", data.to_str().unwrap()], None);
    assert_eq!(tacit(&alice, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    std::thread::sleep(Duration::from_millis(300));
    let first = audit();
    assert!(
        first["post_error"].as_str().is_some_and(|e| e.contains("403") || e.contains("forbidden")),
        "{first}"
    );
    let key = first["cosign_key"].as_str().unwrap().to_owned();
    server.stop();

    let server = ServerProcess::start(
        &["--listen", &listen, "--data", data.to_str().unwrap(), "--kt-auditor", &key],
        None,
    );
    let report = audit();
    assert!(report["posted_epoch"].as_u64().is_some(), "{report}");
    let require = ["--require-auditor", key.as_str()];
    let (rc, l) = tacit(&alice, &[], &[&require[..], &["send", "bob", "one"]].concat());
    assert_eq!(rc, 0, "{l:?}");
    // Two auditors required of one key given: a usage error.
    let (rc, l) =
        tacit(&alice, &[], &[&require[..], &["--auditor-threshold", "2", "send", "bob", "x"]].concat());
    assert_eq!((rc, l[0]["kind"].as_str()), (2, Some("usage")), "{l:?}");

    // A new epoch (carol's account) the auditor has not reached: bob's lookup now proves
    // under it, and the send is refused after the wait.
    assert_eq!(tacit(&carol, &[], &["account", "create", "--server", &url, "--name", "carol"]).0, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (rc, l) = tacit(&alice, &[("TACIT_REQUIRE_AUDITOR", key.as_str())], &["send", "bob", "two"]);
    assert_eq!(rc, 4, "{l:?}");
    let err = l.iter().find(|l| l["type"] == "error").unwrap();
    assert_eq!(err["violation"], "not-cosigned", "{err}");
    audit();
    let (rc, l) = tacit(&alice, &[], &[&require[..], &["send", "bob", "three"]].concat());
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(receive_n(&bob, 2), ["one", "three"]);
    server.stop();
}

/// `tacit audit --log-dir URL`: a log published at a URL, found through its S3-style listing
/// (a Tacit server lists its own audit blobs at its root), is audited like a folder: every
/// blob from the empty root to the newest epoch. A URL that lists nothing is refused.
#[test]
fn a_log_at_a_url_is_audited_through_its_bucket_listing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback(&dir.path().join("data"));
    let url = format!("http://{}", server.addr);
    for name in ["alice", "bob", "carol"] {
        let home = dir.path().join(name);
        assert_eq!(tacit(&home, &[], &["account", "create", "--server", &url, "--name", name]).0, 0);
        std::thread::sleep(Duration::from_millis(150));
    }
    let home = dir.path().join("alice");
    let (rc, l) = tacit(&home, &[], &["kt", "status"]);
    assert_eq!(rc, 0, "{l:?}");
    let newest = l.iter().find(|l| l["type"] == "kt_status").unwrap()["newest_epoch"].as_u64().unwrap();
    let (rc, l) = tacit(&home, &[], &["audit", "--log-dir", &format!("{url}/")]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l[0]["from"].as_u64(), Some(1), "{l:?}");
    assert!(l[0]["epochs"].as_u64().unwrap() >= newest, "{l:?}");
    assert_eq!(l[0]["epochs"], l[0]["to"], "{l:?}");
    let (rc, l) = tacit(&home, &[], &["audit", "--log-dir", &format!("{url}/v1/kt")]);
    assert_ne!(rc, 0, "{l:?}");
    server.stop();
}

/// A server killed with SIGKILL exactly inside an epoch's transaction (records written, the
/// pending changes ended, not committed: the test-only pause of feature `malicious` holds it
/// there), on SQLite and PostgreSQL: after a restart nothing of that epoch is half there;
/// the change is published by the next epoch, its history proof verifies, and every epoch
/// audits as signed and append-only.
#[test]
fn a_server_killed_inside_the_epoch_transaction_loses_nothing_sqlite() {
    killed_inside_the_epoch_transaction(None);
}

#[test]
fn a_server_killed_inside_the_epoch_transaction_loses_nothing_postgres() {
    let schema = PgSchema::new("tacit_kt_kill");
    killed_inside_the_epoch_transaction(Some(&schema.url));
}

/// Waits (at most 5 s) until `home` sees a version of `name` in the directory.
fn wait_published(home: &std::path::Path, name: &str, server: &ServerProcess) {
    let mut tries = 0;
    loop {
        let (rc, l) = tacit(home, &[], &["kt", "history", name]);
        if rc == 0 && l.iter().any(|l| l["type"] == "kt_version") {
            return;
        }
        tries += 1;
        assert!(tries < 50, "{name} never reached the directory: {l:?}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tacit server` arguments for a server restarted on one address: a free loopback port,
/// the data in `dir/data`, on the PostgreSQL `database` when given; and its URL.
fn restartable_server(dir: &Path, database: Option<&str>) -> (Vec<String>, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--listen".to_owned(),
        listen.clone(),
        "--data".to_owned(),
        dir.join("data").display().to_string(),
    ];
    if let Some(db) = database {
        args.extend(["--database".to_owned(), db.to_owned()]);
    }
    (args, format!("http://{listen}"))
}

fn killed_inside_the_epoch_transaction(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (args, url) = restartable_server(dir.path(), database);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A first account, published normally.
    let server = ServerProcess::start(&args, None);
    let alice = dir.path().join("alice");
    assert_eq!(tacit(&alice, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    let mut tries = 0;
    while tacit(&alice, &[], &["kt", "history", "alice"]).0 != 0 {
        tries += 1;
        assert!(tries < 50, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();

    // Bob's account is created; its epoch's write stops inside the transaction; SIGKILL.
    let mut server =
        ServerProcess::start_with_env(&args, None, &[("TACIT_TEST_KT_PAUSE_IN_COMMIT_MS", "60000")]);
    let bob = dir.path().join("bob");
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    server.wait_for("paused inside the epoch transaction");
    server.signal("KILL");
    drop(server);

    let server = ServerProcess::start(&args, None);
    wait_published(&alice, "bob", &server);
    let state = dir.path().join("audit.json");
    let (rc, l) = tacit(&alice, &[], &["audit", "--server", &url, "--state", state.to_str().unwrap()]);
    assert_eq!(rc, 0, "{l:?}");
    let (rc, l) = tacit(&alice, &[], &["send", "bob", "after the kill"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(receive_n(&bob, 1), ["after the kill"]);
    server.stop();
}

/// The server's data folder put back from an older copy (taken before epochs the clients
/// have seen): every client refuses it (`rollback`, exit 4; nothing sent). Its operator
/// starts a new log under a new key with `--kt-new-log OLD_KEY` (another key: nothing
/// happens; the flag left in place: nothing happens again); each client refuses the new
/// key (`wrong-key`, naming `tacit kt trust-new-log`) until its user confirms exactly that
/// key, then sends and receives again, and `kt status` lists the log it left.
#[test]
fn a_server_put_back_from_an_older_copy_goes_on_under_a_new_log_users_confirm_sqlite() {
    put_back_from_an_older_copy(None);
}

/// The same on PostgreSQL, without the copy (a database dump is the operator's tool): the
/// new log and the clients' confirmation.
#[test]
fn a_new_log_is_started_and_confirmed_postgres() {
    let schema = PgSchema::new("tacit_kt_new_log");
    put_back_from_an_older_copy(Some(&schema.url));
}

fn put_back_from_an_older_copy(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (args, url) = restartable_server(dir.path(), database);
    let start = |extra: &[&str]| {
        let all: Vec<&str> = args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        ServerProcess::start(&all, None)
    };
    let (alice, bob, carol) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("carol"));
    let server = start(&[]);
    for (home, name) in [(&alice, "alice"), (&bob, "bob")] {
        assert_eq!(tacit(home, &[], &["account", "create", "--server", &url, "--name", name]).0, 0);
    }
    wait_published(&alice, "bob", &server);
    wait_published(&bob, "alice", &server);
    assert_eq!(tacit(&alice, &[], &["send", "bob", "one"]).0, 0);
    assert_eq!(receive_n(&bob, 1), ["one"]);
    let (rc, l) = tacit(&alice, &[], &["kt", "status"]);
    assert_eq!(rc, 0, "{l:?}");
    let old_key = l[0]["public_key"].as_str().unwrap().to_owned();
    server.stop();

    let copy = dir.path().join("copy");
    if database.is_none() {
        // The copy, taken with the server stopped; then later epochs the clients see.
        copy_dir(&data, &copy);
        let server = start(&[]);
        assert_eq!(tacit(&carol, &[], &["account", "create", "--server", &url, "--name", "carol"]).0, 0);
        wait_published(&alice, "carol", &server);
        assert_eq!(tacit(&bob, &[], &["kt", "status"]).0, 0);
        server.stop();
        std::fs::remove_dir_all(&data).unwrap();
        copy_dir(&copy, &data);
        let server = start(&[]);
        let (rc, l) = tacit(&alice, &[], &["send", "bob", "to the old copy"]);
        assert_eq!(rc, 4, "{l:?}");
        let err = l.iter().find(|l| l["type"] == "error").unwrap();
        assert_eq!(err["violation"], "rollback", "{err}");
        assert!(err["message"].as_str().unwrap().contains("--kt-new-log"), "{err}");
        server.stop();
    }

    // Another key than the log's: nothing happens.
    let server = start(&["--kt-new-log", &"00".repeat(32)]);
    assert!(server.log().contains("no new log was started"), "{}", server.log());
    assert!(server.log().contains(&format!("key={old_key}")), "{}", server.log());
    server.stop();
    let mut server = start(&["--kt-new-log", &old_key]);
    server.wait_for("started a new log");
    let log = server.log();
    let new_key = log.rsplit("key=").next().unwrap()[..64].to_owned();
    assert_ne!(new_key, old_key, "{log}");
    let (rc, l) = tacit(&alice, &[], &["send", "bob", "before confirming"]);
    assert_eq!(rc, 4, "{l:?}");
    let err = l.iter().find(|l| l["type"] == "error").unwrap();
    assert_eq!(err["violation"], "wrong-key", "{err}");
    assert!(err["message"].as_str().unwrap().contains("tacit kt trust-new-log --key"), "{err}");
    // A key the server does not show: refused, nothing changed.
    let (rc, l) = tacit(&alice, &[], &["kt", "trust-new-log", "--key", &"11".repeat(32)]);
    assert_eq!(rc, 4, "{l:?}");
    assert_eq!(tacit(&alice, &[], &["send", "bob", "still refused"]).0, 4);
    let (rc, l) = tacit(&alice, &[], &["kt", "trust-new-log", "--key", &new_key]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l[0]["retired"]["public_key"], old_key.as_str(), "{l:?}");
    wait_published(&alice, "bob", &server);
    let (rc, l) = tacit(&alice, &[], &["send", "bob", "two"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(receive_n(&bob, 1), ["two"]);
    assert_eq!(tacit(&bob, &[], &["send", "alice", "three"]).0, 4);
    assert_eq!(tacit(&bob, &[], &["kt", "trust-new-log", "--key", &new_key]).0, 0);
    let (rc, l) = tacit(&bob, &[], &["send", "alice", "three"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(receive_n(&alice, 1), ["three"]);
    // Trusted already: nothing to do.
    let (rc, l) = tacit(&alice, &[], &["kt", "trust-new-log", "--key", &new_key]);
    assert_eq!((rc, &l[0]["retired"]), (0, &serde_json::Value::Null), "{l:?}");
    server.stop();

    // The flag left in place starts no second new log.
    let server = start(&["--kt-new-log", &old_key]);
    assert!(server.log().contains("no new log was started"), "{}", server.log());
    let (rc, l) = tacit(&alice, &[], &["kt", "status"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l[0]["public_key"], new_key.as_str(), "{l:?}");
    assert_eq!(l[0]["retired"][0]["public_key"], old_key.as_str(), "{l:?}");
    assert_eq!(l[0]["own_history"]["alarms"], serde_json::json!([]), "{l:?}");
    let (rc, l) = tacit(&alice, &[], &["send", "bob", "four"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(receive_n(&bob, 1), ["four"]);
    server.stop();
}

/// Copies a folder and everything in it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
