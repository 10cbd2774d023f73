//! Issue 9 end to end with the real binary and a real server process, on SQLite and
//! PostgreSQL: link a device, approve it, history transfer, fan-out to every device, sent
//! messages on the sender's other devices, a note to self, device list, revoke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::*;

/// `history NAME` as (direction, text) pairs.
fn history(home: &Path, name: &str) -> Vec<(String, String)> {
    let (code, lines) = tacit(home, &[], &["history", name]);
    assert_eq!(code, 0, "{lines:?}");
    lines
        .iter()
        .filter(|l| l["type"] == "history")
        .map(|l| (l["direction"].as_str().unwrap().to_owned(), l["text"].as_str().unwrap().to_owned()))
        .collect()
}

/// Starts `device link` on `home`; returns the child and the link code from its first line.
fn start_link(
    home: &Path,
    url: &str,
    label: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>, String) {
    let (child, out, code, _) = start_link_with(home, url, label, &[]);
    (child, out, code)
}

/// [`start_link`], with the fingerprint the new device shows.
fn start_link_fp(
    home: &Path,
    url: &str,
    label: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>, String, String) {
    start_link_with(home, url, label, &[])
}

/// [`start_link_fp`] with more flags for `device link`.
fn start_link_with(
    home: &Path,
    url: &str,
    label: &str,
    extra: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacit"));
    for k in ["TACIT_PASSPHRASE", "TACIT_HOME", "TACIT_CA_FILE", "TACIT_INSECURE_HTTP"] {
        cmd.env_remove(k);
    }
    cmd.arg("--json")
        .arg("--home")
        .arg(home)
        .args(["device", "link", "--server", url, "--label", label])
        .args(extra);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    assert_eq!(v["type"], "link_code", "the first line is the code: {v}");
    let code = v["link_code"].as_str().unwrap().to_owned();
    let fingerprint = v["fingerprint"].as_str().unwrap().to_owned();
    (child, out, code, fingerprint)
}

/// The rest of a link's JSON lines and its exit code.
fn end_link(mut child: std::process::Child, out: BufReader<std::process::ChildStdout>) -> (i32, Vec<Value>) {
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    (child.wait().unwrap().code().unwrap(), lines)
}

#[test]
fn link_approve_fan_out_sync_and_revoke_on_sqlite() {
    device_flow(None);
}

#[test]
fn link_approve_fan_out_sync_and_revoke_on_postgres() {
    let schema = PgSchema::new("tacit_devices");
    device_flow(Some(&schema.url));
}

fn device_flow(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback_with(&dir.path().join("data"), database);
    let url = format!("http://{}", server.addr);
    let (phone, laptop, bob) = (dir.path().join("phone"), dir.path().join("laptop"), dir.path().join("bob"));
    assert_eq!(tacit(&phone, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    assert_eq!(tacit(&phone, &[], &["send", "bob", "before the laptop"]).0, 0);
    assert_eq!(receive_n(&bob, 1), ["before the laptop"]);
    assert_eq!(tacit(&bob, &[], &["send", "alice", "hi alice"]).0, 0);
    assert_eq!(receive_n(&phone, 1), ["hi alice"]);
    let (_, sn_before) = tacit(&bob, &[], &["safety-number", "alice"]);

    // A wrong code is refused and changes nothing.
    let (code, l) = tacit(&phone, &[], &["device", "approve", "--yes", "ABCDEFGHJKMNPQRSTVWXYZ0123"]);
    assert_ne!(code, 0, "{l:?}");

    // Link the laptop: the phone approves the code the laptop shows.
    let (child, out, link_code, fingerprint) = start_link_fp(&laptop, &url, "laptop");
    let (code, l) = tacit(&phone, &[], &["device", "approve", "--yes", &link_code]);
    assert_eq!(code, 0, "{l:?}");
    let approved = l.iter().find(|l| l["type"] == "device_approved").unwrap();
    assert_eq!((approved["id"].as_u64(), approved["label"].as_str()), (Some(2), Some("laptop")));
    // The approver shows the fingerprint the new device shows: the user compares them.
    assert_eq!(approved["fingerprint"].as_str(), Some(fingerprint.as_str()));
    let (code, l) = end_link(child, out);
    assert_eq!(code, 0, "{l:?}");
    assert!(l.iter().any(|l| l["type"] == "linked" && l["account"] == "alice" && l["device"] == 2), "{l:?}");
    // The code is single-use.
    let (code, _) = tacit(&phone, &[], &["device", "approve", "--yes", &link_code]);
    assert_ne!(code, 0);

    // History transfer: the laptop's conversation with bob is the phone's.
    assert_eq!(history(&laptop, "bob"), history(&phone, "bob"));
    assert_eq!(history(&laptop, "bob").len(), 2);

    // device list: one line per device in the documented shape.
    let (code, l) = tacit(&laptop, &[], &["device", "list"]);
    assert_eq!(code, 0, "{l:?}");
    let devices: Vec<&Value> = l.iter().filter(|l| l["type"] == "device").collect();
    assert_eq!(devices.len(), 2, "{l:?}");
    for d in &devices {
        let keys: std::collections::BTreeSet<&str> =
            d.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["added", "approver", "current", "id", "label", "last_seen", "type"].into_iter().collect(),
            "{d}"
        );
    }
    let laptop_line = devices.iter().find(|d| d["id"] == 2).unwrap();
    assert_eq!(
        (laptop_line["current"].as_bool(), laptop_line["approver"].as_bool(), laptop_line["label"].as_str()),
        (Some(true), Some(false), Some("laptop"))
    );
    assert_eq!(devices.iter().find(|d| d["id"] == 1).unwrap()["approver"], true);

    // Linking a device that holds no account key does not change the safety number.
    let (_, sn_after) = tacit(&bob, &[], &["safety-number", "alice"]);
    assert_eq!(sn_before.last().unwrap()["number"], sn_after.last().unwrap()["number"]);

    // Fan-out: bob's next message reaches both of alice's devices (his client learns of the
    // laptop from the server's 409 and the signed list, without him doing anything).
    let (code, l) = tacit(&bob, &[], &["send", "alice", "to both"]);
    assert_eq!(code, 0, "{l:?}");
    // bob was told of the new device by the first command that fetched alice's list (the
    // safety-number above), and his history shows it.
    assert!(
        sn_after.iter().any(|l| l["type"] == "warning" && l["message"] == "alice added a device: laptop"),
        "bob is told of the new device: {sn_after:?}"
    );
    let (_, h) = tacit(&bob, &[], &["history", "alice"]);
    assert!(h.iter().any(|l| l["type"] == "notice" && l["text"] == "alice added a device: laptop"), "{h:?}");
    assert_eq!(receive_n(&phone, 1), ["to both"]);
    assert_eq!(receive_n(&laptop, 1), ["to both"]);

    sent_sync_and_note_to_self(&phone, &laptop, &bob);

    // Revoke the laptop: it can no longer sign in, bob's next message reaches the phone only,
    // and the safety number stays (the laptop held no account key).
    let (code, l) = tacit(&phone, &[], &["device", "revoke", "2", "--yes"]);
    assert_eq!(code, 0, "{l:?}");
    let r = l.iter().find(|l| l["type"] == "device_revoked").unwrap();
    assert_eq!(r["account_key_rotated"], false);
    assert_eq!(tacit(&bob, &[], &["send", "alice", "after the revocation"]).0, 0);
    assert_eq!(receive_n(&phone, 1), ["after the revocation"]);
    let (code, l) = tacit(&laptop, &[], &["receive"]);
    assert_ne!(code, 0, "a revoked device is refused: {l:?}");
    let (_, sn_revoked) = tacit(&bob, &[], &["safety-number", "alice"]);
    assert_eq!(sn_before.last().unwrap()["number"], sn_revoked.last().unwrap()["number"]);
    // The last device holding the account key cannot be revoked.
    let (code, l) = tacit(&phone, &[], &["device", "revoke", "1", "--yes"]);
    assert_eq!(code, 2, "{l:?}");
    server.stop();
}

/// Sent from the laptop: bob gets it, and the phone's history shows it as sent; a note to self
/// reaches the other device.
fn sent_sync_and_note_to_self(phone: &Path, laptop: &Path, bob: &Path) {
    // Sent from the laptop: bob gets it, and the phone's history shows it as sent.
    assert_eq!(tacit(laptop, &[], &["send", "bob", "from the laptop"]).0, 0);
    assert_eq!(receive_n(bob, 1), ["from the laptop"]);
    let (code, _) = tacit(phone, &[], &["receive", "--wait", "3"]);
    assert_eq!(code, 0);
    assert!(
        history(phone, "bob").contains(&("sent".to_owned(), "from the laptop".to_owned())),
        "{:?}",
        history(phone, "bob")
    );

    // A note to self reaches the other device.
    assert_eq!(tacit(phone, &[], &["send", "alice", "note to self"]).0, 0);
    assert_eq!(tacit(laptop, &[], &["receive", "--wait", "3"]).0, 0);
    assert!(
        history(laptop, "alice").contains(&("sent".to_owned(), "note to self".to_owned())),
        "{:?}",
        history(laptop, "alice")
    );
}

/// Links `home` into the account of `approver` (`extra`: more `device approve` flags); the
/// new device's id.
fn link(home: &Path, approver: &Path, url: &str, label: &str, extra: &[&str]) -> u64 {
    let (child, out, code) = start_link(home, url, label);
    let mut args = vec!["device", "approve", "--yes"];
    args.extend_from_slice(extra);
    args.push(&code);
    let (rc, l) = tacit(approver, &[], &args);
    assert_eq!(rc, 0, "{l:?}");
    let (rc, l) = end_link(child, out);
    assert_eq!(rc, 0, "{l:?}");
    l.iter().find(|l| l["type"] == "linked").unwrap()["device"].as_u64().unwrap()
}

fn warnings(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["type"] == "warning")
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The new device declines the history the approver sends: nothing imported, said in the
/// JSON, the device linked all the same and receiving from then on.
#[test]
fn a_new_device_can_decline_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback(&dir.path().join("data"));
    let url = format!("http://{}", server.addr);
    let (phone, laptop, bob) = (dir.path().join("phone"), dir.path().join("laptop"), dir.path().join("bob"));
    assert_eq!(tacit(&phone, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["send", "alice", "old news"]).0, 0);
    assert_eq!(receive_n(&phone, 1), ["old news"]);

    let (child, out, code, _) = start_link_with(&laptop, &url, "laptop", &["--no-history"]);
    let (rc, l) = tacit(&phone, &[], &["device", "approve", "--yes", &code]);
    assert_eq!(rc, 0, "{l:?}");
    let approved = l.iter().find(|l| l["type"] == "device_approved").unwrap();
    assert_eq!(approved["history"], true, "the approver sent it: {l:?}");
    let (rc, l) = end_link(child, out);
    assert_eq!(rc, 0, "{l:?}");
    assert!(l.iter().any(|l| l["type"] == "history_declined"), "{l:?}");
    assert!(!l.iter().any(|l| l["type"] == "history_imported"), "{l:?}");
    // Nothing imported: the laptop does not even know bob yet.
    let (rc, l) = tacit(&laptop, &[], &["history", "bob"]);
    assert_eq!(rc, 5, "{l:?}");
    assert_eq!(history(&phone, "bob").len(), 1);
    // Linked all the same: new messages reach it.
    assert_eq!(tacit(&bob, &[], &["send", "alice", "fresh"]).0, 0);
    assert_eq!(receive_n(&laptop, 1), ["fresh"]);
    assert_eq!(history(&laptop, "bob"), [("received".to_owned(), "fresh".to_owned())]);
}

/// A device approved with --approver holds the account key: it can approve others. Revoking it
/// replaces the account key: the remaining devices are told over their sessions (the other
/// approver gets the new key, a device without it only the list), contacts see an identity
/// change and a new safety number, and messages flow to the remaining devices. The last device
/// holding the key cannot be revoked.
#[test]
fn revoking_a_device_that_holds_the_account_key_rotates_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback(&dir.path().join("data"));
    let url = format!("http://{}", server.addr);
    let (phone, laptop, tablet, bob) = (
        dir.path().join("phone"),
        dir.path().join("laptop"),
        dir.path().join("tablet"),
        dir.path().join("bob"),
    );
    assert_eq!(tacit(&phone, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["send", "alice", "hello"]).0, 0);
    assert_eq!(receive_n(&phone, 1), ["hello"]);
    let (_, sn) = tacit(&bob, &[], &["safety-number", "alice"]);
    let sn_before = sn.last().unwrap()["number"].clone();

    assert_eq!(link(&laptop, &phone, &url, "laptop", &["--approver", "--no-history"]), 2);
    // The laptop holds the key: it approves the tablet.
    assert_eq!(link(&tablet, &laptop, &url, "tablet", &[]), 3);
    let (_, l) = tacit(&tablet, &[], &["device", "list"]);
    let approvers: Vec<u64> = l
        .iter()
        .filter(|d| d["type"] == "device" && d["approver"] == true)
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(approvers, [1, 2], "{l:?}");
    // A device without the key cannot revoke another.
    let (rc, l) = tacit(&tablet, &[], &["device", "revoke", "1", "--yes"]);
    assert_eq!(rc, 2, "{l:?}");

    // Everyone has a session with the others' devices before the rotation.
    assert_eq!(tacit(&bob, &[], &["send", "alice", "to three"]).0, 0);
    for h in [&phone, &laptop, &tablet] {
        assert_eq!(receive_n(h, 1), ["to three"]);
    }

    let (rc, l) = tacit(&phone, &[], &["device", "revoke", "2", "--yes"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l.iter().find(|l| l["type"] == "device_revoked").unwrap()["account_key_rotated"], true);
    // The tablet takes the new list from the phone (it holds no key) and says so.
    let (rc, l) = tacit(&tablet, &[], &["receive", "--wait", "3"]);
    assert_eq!(rc, 0, "{l:?}");
    assert!(warnings(&l).iter().any(|w| w.contains("replaced your account key")), "{l:?}");
    let (rc, l) = tacit(&tablet, &[], &["device", "list"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l.iter().filter(|d| d["type"] == "device").count(), 2, "{l:?}");

    // bob is told that alice's identity changed, and the safety number changed (a look at
    // the safety number fetches the list).
    let (rc, sn) = tacit(&bob, &[], &["safety-number", "alice"]);
    assert_eq!(rc, 0, "{sn:?}");
    assert!(warnings(&sn).iter().any(|w| w.contains("identity key changed")), "{sn:?}");
    assert_ne!(sn.last().unwrap()["number"], sn_before);
    // The devices whose own identity did not change keep their sessions with bob: what they
    // send on them before bob writes again still decrypts (bob once dropped every session
    // with alice on the key change, and those messages were lost).
    assert_eq!(tacit(&tablet, &[], &["send", "bob", "tablet, old session"]).0, 0);
    assert_eq!(tacit(&phone, &[], &["send", "bob", "phone, old session"]).0, 0);
    assert_eq!(receive_n(&bob, 2), ["tablet, old session", "phone, old session"]);
    for h in [&phone, &tablet] {
        let (rc, l) = tacit(h, &[], &["receive"]);
        assert_eq!(rc, 0, "{l:?}");
    }
    let (rc, l) = tacit(&bob, &[], &["send", "alice", "after the rotation"]);
    assert_eq!(rc, 0, "{l:?}");
    let (_, mine) = tacit(&tablet, &[], &["safety-number", "bob"]);
    assert_eq!(mine.last().unwrap()["number"], sn.last().unwrap()["number"], "both sides agree");
    assert_eq!(receive_n(&phone, 1), ["after the rotation"]);
    assert_eq!(receive_n(&tablet, 1), ["after the rotation"]);
    let (rc, _) = tacit(&laptop, &[], &["receive"]);
    assert_ne!(rc, 0, "the revoked device is refused");

    // The tablet can still send (its own list verifies under the new key).
    assert_eq!(tacit(&tablet, &[], &["send", "bob", "from the tablet"]).0, 0);
    assert_eq!(receive_n(&bob, 1), ["from the tablet"]);
    // The phone is now the only device holding the key.
    let (rc, l) = tacit(&phone, &[], &["device", "revoke", "1", "--yes"]);
    assert_eq!(rc, 2, "{l:?}");

    // The tablet (no account key) logs itself out: its data is gone from its home, the server
    // takes nothing more for it, and the phone is told; it stays in the signed list until an
    // approver revokes it (the server's word alone removes nothing).
    let (rc, l) = tacit(&tablet, &[], &["device", "revoke", "3", "--yes"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l.iter().find(|l| l["type"] == "device_revoked").unwrap()["this_device"], true);
    assert_eq!(tacit(&tablet, &[], &["receive"]).0, 5, "no account here any more");
    let (rc, l) = tacit(&phone, &[], &["device", "list"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l.iter().filter(|d| d["type"] == "device").count(), 2, "{l:?}");
    assert!(warnings(&l).iter().any(|w| w.contains("device 3 (tablet) logged itself out")), "{l:?}");
    assert_eq!(tacit(&bob, &[], &["send", "alice", "while listed"]).0, 0);
    assert_eq!(receive_n(&phone, 1), ["while listed"]);
    let (rc, l) = tacit(&phone, &[], &["device", "revoke", "3", "--yes"]);
    assert_eq!(rc, 0, "{l:?}");
    let (rc, l) = tacit(&phone, &[], &["device", "list"]);
    assert_eq!(rc, 0, "{l:?}");
    let ids: Vec<u64> =
        l.iter().filter(|d| d["type"] == "device").map(|d| d["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1], "{l:?}");
    assert_eq!(tacit(&bob, &[], &["send", "alice", "phone only"]).0, 0);
    assert_eq!(receive_n(&phone, 1), ["phone only"]);
    server.stop();
}

/// `cp -a FROM TO` after removing TO: a home folder put back from an older copy.
fn put_back(copy: &Path, home: &Path) {
    std::fs::remove_dir_all(home).unwrap();
    cp_a(copy, home);
}

/// Two devices take an account key rotation and are then put back from copies made before
/// it: the update they took is gone from the server, so each follows the rotations the server
/// kept, signed by the key it holds, to the current list. A device without the key just goes
/// on (its next send reaches bob); an approver that held only the old key deletes it and says
/// so (it can no longer revoke). Both still receive. (Before, both refused their own account's
/// list as an identity change for good.)
#[test]
fn devices_restored_from_before_a_rotation_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback(&dir.path().join("data"));
    let url = format!("http://{}", server.addr);
    let h = |n: &str| dir.path().join(n);
    let (phone, laptop, tablet, desk, bob) = (h("phone"), h("laptop"), h("tablet"), h("desk"), h("bob"));
    assert_eq!(tacit(&phone, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    assert_eq!(link(&laptop, &phone, &url, "laptop", &["--approver", "--no-history"]), 2);
    assert_eq!(link(&tablet, &phone, &url, "tablet", &["--no-history"]), 3);
    assert_eq!(link(&desk, &phone, &url, "desk", &["--approver", "--no-history"]), 4);
    assert_eq!(tacit(&bob, &[], &["send", "alice", "to four"]).0, 0);
    for d in [&phone, &laptop, &tablet, &desk] {
        assert_eq!(receive_n(d, 1), ["to four"]);
    }
    cp_a(&tablet, &h("tablet.copy"));
    cp_a(&desk, &h("desk.copy"));

    let (rc, l) = tacit(&phone, &[], &["device", "revoke", "2", "--yes"]);
    assert_eq!(rc, 0, "{l:?}");
    assert_eq!(l.iter().find(|l| l["type"] == "device_revoked").unwrap()["account_key_rotated"], true);
    for d in [&tablet, &desk] {
        let (rc, l) = tacit(d, &[], &["receive", "--wait", "3"]);
        assert_eq!(rc, 0, "{l:?}");
        assert!(warnings(&l).iter().any(|w| w.contains("replaced your account key")), "{l:?}");
    }
    put_back(&h("tablet.copy"), &tablet);
    put_back(&h("desk.copy"), &desk);

    let (rc, l) = tacit(&tablet, &[], &["send", "bob", "from the restored tablet"]);
    assert_eq!(rc, 0, "{l:?}");
    assert!(warnings(&l).iter().any(|w| w.contains("had missed 1 change(s) of your account key")), "{l:?}");
    assert!(!warnings(&l).iter().any(|w| w.contains("could not send a queued message")), "{l:?}");
    assert_eq!(receive_n(&bob, 1), ["from the restored tablet"]);
    // Its sent copy reaches the account's other devices (once dropped on the way).
    assert_eq!(tacit(&phone, &[], &["receive", "--wait", "3"]).0, 0);
    assert!(
        history(&phone, "bob").contains(&("sent".to_owned(), "from the restored tablet".to_owned())),
        "{:?}",
        history(&phone, "bob")
    );
    let (rc, l) = tacit(&desk, &[], &["device", "list"]);
    assert_eq!(rc, 0, "{l:?}");
    assert!(warnings(&l).iter().any(|w| w.contains("was deleted here")), "{l:?}");
    let ids: Vec<u64> =
        l.iter().filter(|d| d["type"] == "device").map(|d| d["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 3, 4], "{l:?}");
    let (rc, l) = tacit(&desk, &[], &["device", "revoke", "3", "--yes"]);
    assert_eq!(rc, 2, "the old key is gone: {l:?}");
    // The phone, which holds the key, still can; messages reach every remaining device.
    assert_eq!(tacit(&bob, &[], &["send", "alice", "after the restores"]).0, 0);
    for d in [&phone, &tablet, &desk] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut got = Vec::new();
        while !got.iter().any(|t| t == "after the restores") && std::time::Instant::now() < deadline {
            got.extend(receive_n(d, 1));
        }
        assert!(got.iter().any(|t| t == "after the restores"), "{}: {got:?}", d.display());
    }
    server.stop();
}

/// `cp -a FROM TO` (TO must not exist).
fn cp_a(from: &Path, to: &Path) {
    assert!(Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success());
}

/// `safety-number --qr` shows the scannable payload; `verify --scan` with the other side's
/// payload verifies, and a payload that does not match (or is malformed) is exit 4 and
/// changes nothing.
#[test]
fn a_scanned_safety_number_verifies_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::on_loopback(&dir.path().join("data"));
    let url = format!("http://{}", server.addr);
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    assert_eq!(tacit(&alice, &[], &["account", "create", "--server", &url, "--name", "alice"]).0, 0);
    assert_eq!(tacit(&bob, &[], &["account", "create", "--server", &url, "--name", "bob"]).0, 0);
    let payload = |home: &Path, name: &str| {
        let (rc, l) = tacit(home, &[], &["safety-number", name, "--qr"]);
        assert_eq!(rc, 0, "{l:?}");
        l.iter().find(|l| l["type"] == "safety_number_payload").unwrap()["payload"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let from_bob = payload(&bob, "alice");
    let from_alice = payload(&alice, "bob");
    assert!(from_bob.starts_with("TACIT-SN1-") && from_bob != from_alice);
    let verified = |home: &Path, name: &str| {
        let (_, l) = tacit(home, &[], &["safety-number", name]);
        l.last().unwrap()["verified"].as_bool().unwrap()
    };
    // alice's own payload is not bob's; a flipped digit; not a payload at all.
    let mut flipped = from_bob.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    for wrong in [from_alice.clone(), String::from_utf8(flipped).unwrap(), "hello".to_owned()] {
        let (rc, l) = tacit(&alice, &[], &["verify", "bob", "--scan", &wrong]);
        assert_eq!(rc, 4, "{l:?}");
        assert!(!verified(&alice, "bob"));
    }
    let (rc, l) = tacit(&alice, &[], &["verify", "bob", "--scan", &from_bob]);
    assert_eq!(rc, 0, "{l:?}");
    assert!(verified(&alice, "bob"));
    server.stop();
}
