//! The CLI's exit-code contract (docs/CLI.md), run as a real process.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // a test file: helpers outside #[test] functions unwrap too

use std::process::Command;

fn tacit(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![std::ffi::OsStr::new("--home"), home.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    tacit_os(&all)
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

/// `tacit ARGS` (raw arguments, not necessarily UTF-8) without `--home`.
fn tacit_os(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .env_remove("TACIT_PASSPHRASE")
        .env_remove("TACIT_HOME")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a std::ffi::OsStr> {
    args.iter().map(std::ffi::OsStr::new).collect()
}

/// Exactly one JSON error line of kind usage on stdout; its message.
fn one_usage_error(stdout: &str) -> String {
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!((v["type"].as_str(), v["kind"].as_str()), (Some("error"), Some("usage")), "{v}");
    v["message"].as_str().unwrap().to_owned()
}

/// Issue 8, point 7: with `--json` (anywhere on the line), every argument error is one JSON
/// error line (exit 2), invalid UTF-8 included; `--help` stays help; without `--json`,
/// clap's text on standard error as before.
#[test]
fn argument_errors_are_json_lines_with_json() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--json", "send", "bob"][..], "<TEXT>"),
        (&["send", "--json", "bob"], "<TEXT>"),
        (&["receive", "--wait", "x", "--json"], "--wait"),
        (&["--json", "frobnicate"], "frobnicate"),
        (&["--json"], "requires a subcommand"),
        (&["--json", "account"], "Usage: tacit account"),
        (&["--json", "account", "create", "--name", "alice"], "--server"),
    ] {
        let (code, stdout, stderr) = tacit_os(&os(args));
        assert_eq!(code, 2, "{args:?}: {stdout} {stderr}");
        let message = one_usage_error(&stdout);
        assert!(message.contains(says), "{args:?}: {message}");
        assert!(!message.contains('\n') && !message.starts_with("error:"), "{message}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
        let args = [std::ffi::OsStr::new("--json"), "send".as_ref(), "bob".as_ref(), bad];
        let (code, stdout, _) = tacit_os(&args);
        assert_eq!(code, 2, "{stdout}");
        assert!(one_usage_error(&stdout).contains("UTF-8"), "{stdout}");
    }
    // After `--`, "--json" is a value, not the flag.
    let (code, stdout, stderr) = tacit_os(&os(&["send", "--", "--json"]));
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    let (code, stdout, stderr) = tacit(dir.path(), &["send", "bob"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(stderr.contains("<TEXT>") && stderr.contains("Usage:"), "{stderr}");
    let (code, stdout, _) = tacit_os(&os(&["--json", "--help"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("safety-number") && !stdout.starts_with('{'), "{stdout}");
    let (code, stdout, _) = tacit_os(&os(&["--version", "--json"]));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("tacit "), "{stdout}");
}

/// Issue 8, point 7: a server URL that is not `http(s)://host[:port]` is a usage error,
/// refused before anything is made: no file in the home.
#[test]
fn a_bad_server_url_is_usage_and_leaves_no_store() {
    for (url, says) in [
        ("ftp://x", "ftp://"),
        ("http://127.0.0.1:9/tacit", "has a path"),
        ("http://127.0.0.1:9/?x=1", "has a path"),
        ("http://127.0.0.1:9?x=1", "has a query"),
        ("http://127.0.0.1:9#x", "has a fragment"),
        ("http://me:secret@127.0.0.1:9", "no user name or password"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("h");
        let (code, stdout, stderr) =
            tacit(&home, &["--json", "account", "create", "--server", url, "--name", "alice"]);
        assert_eq!(code, 2, "{url}: {stdout} {stderr}");
        let message = one_usage_error(&stdout);
        assert!(message.contains(says) && !message.contains("secret"), "{url}: {message}");
        assert!(!home.exists(), "{url}: nothing is made in the home");
    }
}

/// `tacit --json server ARGS` with its data in `dir` (unless ARGS say `--data`); killed if still running after 20 s
/// (a server that should have refused to start). The exit code and the error line's message.
fn server_refuses(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .env_remove("TACIT_LISTEN")
        .env_remove("TACIT_DATA")
        .env_remove("TACIT_DATABASE_URL")
        .env_remove("TACIT_CONFIG")
        .args(["--json", "server"])
        .args(if args.contains(&"--data") { vec![] } else { vec!["--data".into(), dir.join("data")] })
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["type"], "error", "{stdout}");
    (out.status.code().unwrap(), v["message"].as_str().unwrap().to_owned())
}

/// Issue 8, point 8: start-up errors name the address or the path and say why in words.
#[test]
fn server_start_up_errors_name_the_address_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, message) = server_refuses(dir.path(), &["--listen", &addr]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains(&format!("cannot listen on {addr}: address already in use")), "{message}");
    assert!(!message.contains("os error"), "{message}");

    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    let (code, message) = server_refuses(dir.path(), &["--data", file.to_str().unwrap()]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains(file.to_str().unwrap()) && message.contains("in the way"), "{message}");

    let missing = dir.path().join("missing.pem");
    let m = missing.to_str().unwrap();
    let (code, message) =
        server_refuses(dir.path(), &["--listen", "127.0.0.1:0", "--tls-cert", m, "--tls-key", m]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains(&format!("certificate file {m}: no such file")), "{message}");
}

/// Issue 8, point 9: every duration from a flag or a config file is bounded: a usage error
/// naming the flag or key and its range (exit 2), never a panic.
#[test]
fn durations_out_of_range_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = tacit(dir.path(), &["--json", "receive", "--wait", "18446744073709551615"]);
    assert_eq!(code, 2, "{stdout}");
    let message = one_usage_error(&stdout);
    assert!(message.contains("--wait") && message.contains("0..=86400"), "{message}");
    for key in ["header_read_timeout_secs", "shutdown_grace_secs"] {
        let file = dir.path().join("tacit.toml");
        std::fs::write(&file, format!("listen = \"127.0.0.1:0\"\n{key} = 18446744073709551615\n")).unwrap();
        let (code, message) = server_refuses(dir.path(), &["--config", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{message}");
        assert!(message.contains(key) && message.contains("0 to 3600 seconds"), "{message}");
    }
}
