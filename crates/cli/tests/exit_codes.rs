//! The CLI's exit-code contract (docs/CLI.md), run as a real process.
#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] functions unwrap too

use std::process::Command;

fn tacit(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .env_remove("TACIT_PASSPHRASE")
        .env_remove("TACIT_HOME")
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(tacit(dir.path(), &["send", "bob"]).0, 2);
    assert_eq!(tacit(dir.path(), &["frobnicate"]).0, 2);
    assert_eq!(tacit(dir.path(), &["receive", "--wait", "soon"]).0, 2);
    let (code, stdout, _) = tacit(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("safety-number"));
}

#[test]
fn no_account_exits_5_with_a_json_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["history", "bob"][..], &["send", "bob", "hi"], &["receive"], &["safety-number", "bob"]] {
        assert_eq!(tacit(dir.path(), args).0, 5, "{args:?}");
    }
    let (code, stdout, _) = tacit(dir.path(), &["--json", "history", "bob"]);
    assert_eq!(code, 5);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["kind"], "not_found");
}

#[test]
fn bad_name_is_usage_and_unreachable_server_is_network() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) =
        tacit(dir.path(), &["account", "create", "--server", "http://127.0.0.1:9", "--name", "Not Valid"]);
    assert_eq!(code, 2);
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let (code, _, err) =
        tacit(dir.path(), &["account", "create", "--server", "http://127.0.0.1:9", "--name", "alice"]);
    assert_eq!(code, 3, "{err}");
}
