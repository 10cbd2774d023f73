//! The store's files through the binary against a real server (issue 8, points 10 to 13): a
//! folder or disk that cannot be written is a disk error naming the file (not a wrong
//! passphrase), a lost key file says what is missing, damaged marks are rebuilt with a
//! warning, `account forget` is the way out when the server forgot the account, and
//! `store.db` is private.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)] // a test file

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tacit_server::{Server, ServerConfig};

/// Runs `tacit --json --home HOME ARGS` with extra environment; the exit code and the JSON
/// lines (stdin is not a terminal).
fn tacit(home: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, Vec<Value>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tacit"));
    for k in ["TACIT_PASSPHRASE", "TACIT_NEW_PASSPHRASE", "TACIT_HOME", "TACIT_CA_FILE"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.arg("--json").arg("--home").arg(home).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect::<Vec<_>>();
    (out.status.code().unwrap(), lines)
}

/// The message of the first error line.
fn error_message(lines: &[Value]) -> String {
    let e = lines.iter().find(|l| l["type"] == "error").unwrap_or_else(|| panic!("no error: {lines:?}"));
    e["message"].as_str().unwrap().to_owned()
}

/// The messages of the warning lines.
fn warnings(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["type"] == "warning")
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

/// A server on `listen` with its data in `data`; its URL, and what stops it.
async fn start_server(data: &Path, listen: SocketAddr) -> (String, SocketAddr, impl AsyncFnOnce() + use<>) {
    let mut config = ServerConfig::default();
    config.kt_epoch_interval_ms = 50;
    config.listen = listen;
    config.data_dir = data.to_owned();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), addr, async move || {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
}

fn create(home: &Path, env: &[(&str, &str)], url: &str, name: &str) {
    let (code, l) = tacit(home, env, &["account", "create", "--server", url, "--name", name]);
    assert_eq!(code, 0, "{l:?}");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Makes a folder read-only for the test's life: `chattr +i` as root (permission bits do not
/// stop root), mode 0500 (and its files 0400) otherwise. `None` when neither is possible.
struct ReadOnly {
    dir: PathBuf,
    immutable: bool,
}

impl ReadOnly {
    fn new(dir: &Path) -> Option<Self> {
        if is_root() {
            let ok = Command::new("chattr").arg("+i").arg(dir).status().is_ok_and(|s| s.success());
            return ok.then(|| Self { dir: dir.to_owned(), immutable: true });
        }
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir).unwrap() {
            std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o400)).unwrap();
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        Some(Self { dir: dir.to_owned(), immutable: false })
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

/// A 4 MiB tmpfs (root only), unmounted when dropped.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn new(dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tacit-test"])
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }

    /// Fills what is left of it.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let mut small = [0u8; 512];
        while f.write_all(&small).is_ok() {
            small[0] ^= 1;
        }
        let _ = f.write_all(&[1]);
        let _ = f.sync_all();
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 8, point 10: a read-only home, a full disk, or something else where a file of the
/// store should be is exit 1 with the file's name, not "wrong passphrase" (exit 4, which a
/// wrong passphrase still is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_cannot_be_written_is_a_disk_error_naming_the_file_not_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _, stop) = start_server(&dir.path().join("server"), "127.0.0.1:0".parse().unwrap()).await;
    let root = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let pass = [("TACIT_PASSPHRASE", "a secret")];
        let disk_error = |home: &Path, env: &[(&str, &str)], file: &str, what: &str| {
            for args in [&["history", "bob"][..], &["receive"]] {
                let (code, l) = tacit(home, env, args);
                let message = error_message(&l);
                assert_eq!(code, 1, "{what}, {args:?}: {l:?}");
                assert!(message.contains(&home.join(file).display().to_string()), "{what}: {message}");
                assert!(!message.contains("passphrase"), "{what}: {message}");
            }
        };
        let a = root.join("a");
        create(&a, &pass, &url, "alice");
        assert_eq!(tacit(&a, &[("TACIT_PASSPHRASE", "wrong")], &["receive"]).0, 4, "a wrong passphrase");

        // Something else where SQLite's write-ahead log should be: it cannot be opened.
        std::fs::create_dir(a.join("store.db-wal")).unwrap();
        disk_error(&a, &pass, "store.db", "a folder in place of store.db-wal");
        std::fs::remove_dir(a.join("store.db-wal")).unwrap();
        // ... and where the generation marks should be.
        std::fs::remove_file(a.join("generations")).unwrap();
        std::fs::create_dir(a.join("generations")).unwrap();
        disk_error(&a, &pass, "generations", "a folder in place of generations");
        std::fs::remove_dir(a.join("generations")).unwrap();
        std::fs::write(a.join("generations"), b"TGN2").unwrap();
        assert_eq!(tacit(&a, &pass, &["receive"]).0, 0);

        // A read-only home: SQLite cannot make its WAL and shared-memory files.
        match ReadOnly::new(&a) {
            Some(read_only) => {
                disk_error(&a, &pass, "store.db", "a read-only home");
                drop(read_only);
                assert_eq!(tacit(&a, &pass, &["receive"]).0, 0, "writable again: it opens");
            }
            None => eprintln!("SKIPPED the read-only home: root without `chattr +i` here"),
        }

        // A home the user may not enter (permission bits stop only others than root).
        if is_root() {
            eprintln!("SKIPPED the home without search permission: root passes through it");
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o000)).unwrap();
            let (code, l) = tacit(&a, &pass, &["receive"]);
            std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o700)).unwrap();
            let message = error_message(&l);
            assert_eq!(code, 1, "{l:?}");
            assert!(message.contains(&a.join("store.db").display().to_string()), "{message}");
            assert!(!message.contains("no account here"), "{message}");
        }

        // A full disk (a tiny tmpfs, as root only).
        match TinyDisk::new(&root.join("tiny")) {
            Some(disk) => {
                let home = root.join("tiny/home");
                create(&home, &[], &url, "carol");
                disk.fill();
                disk_error(&home, &[], "store.db", "a full disk");
                std::fs::remove_file(root.join("tiny/filler")).unwrap();
                assert_eq!(tacit(&home, &[], &["receive"]).0, 0, "space again: it opens");
                drop(disk);
            }
            None => eprintln!("SKIPPED the full disk: mounting a tmpfs needs root here"),
        }
    })
    .await
    .unwrap();
    stop().await;
}

/// Issue 8, point 11: a lost `store.salt` says what is missing and what to do (exit 1), also
/// to `account create`, which leaves the store alone; a damaged `generations` file is rebuilt
/// with a warning and the conversation goes on in both directions; a damaged
/// `prekeys_generation` is treated as lost, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_key_file_says_what_is_missing_and_damaged_marks_are_rebuilt_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _, stop) = start_server(&dir.path().join("server"), "127.0.0.1:0".parse().unwrap()).await;
    let root = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let (a, b) = (root.join("a"), root.join("b"));
        let pass = [("TACIT_PASSPHRASE", "a secret")];
        create(&a, &pass, &url, "alice");
        create(&b, &[], &url, "bob");
        assert_eq!(tacit(&a, &pass, &["send", "bob", "one"]).0, 0);
        assert_eq!(tacit(&b, &[], &["receive"]).1[0]["text"], "one");
        assert_eq!(tacit(&b, &[], &["send", "alice", "two"]).0, 0);
        assert_eq!(tacit(&a, &pass, &["receive"]).1[0]["text"], "two");

        // store.salt lost.
        let salt = std::fs::read(a.join("store.salt")).unwrap();
        std::fs::remove_file(a.join("store.salt")).unwrap();
        let db = std::fs::read(a.join("store.db")).unwrap();
        let create_again = ["account", "create", "--server", &url, "--name", "alice"];
        for args in [&["receive"][..], &["send", "bob", "x"], &create_again] {
            let (code, l) = tacit(&a, &pass, args);
            let message = error_message(&l);
            assert_eq!((code, l[0]["kind"].as_str()), (1, Some("failure")), "{args:?}: {l:?}");
            assert!(message.contains("store.salt or store.key") && message.contains("missing"), "{message}");
            assert!(message.contains("restore it from your backup"), "{message}");
            assert!(message.contains("tacit account forget"), "{message}");
            assert!(!message.contains("no account here"), "{message}");
        }
        assert_eq!(std::fs::read(a.join("store.db")).unwrap(), db, "account create left the store alone");
        std::fs::write(a.join("store.salt"), salt).unwrap();
        assert_eq!(tacit(&a, &pass, &["receive"]).0, 0, "the salt restored: it opens");

        // generations damaged (its header: a bad record near the end would be taken for a
        // torn last append, which drops the marks after it without a word, as safely).
        let marks = b.join("generations");
        let mut bytes = std::fs::read(&marks).unwrap();
        assert!(bytes.len() > 4 + 48, "bob has marks");
        bytes[0] ^= 0xff;
        std::fs::write(&marks, &bytes).unwrap();
        let (code, l) = tacit(&b, &[], &["history", "alice"]);
        assert_eq!(code, 0, "{l:?}");
        let w = warnings(&l);
        assert!(
            w.len() == 1 && w[0].contains(&marks.display().to_string()) && w[0].contains("rebuilt"),
            "{w:?}"
        );
        assert!(w[0].contains("new session"), "{w:?}");
        let (code, l) = tacit(&b, &[], &["history", "alice"]);
        assert_eq!((code, warnings(&l).len()), (0, 0), "rebuilt once: {l:?}");
        // A late message on the old session still decrypts (a stale session is only never sent
        // on again) ...
        assert_eq!(tacit(&a, &pass, &["send", "bob", "late"]).0, 0);
        let (code, l) = tacit(&b, &[], &["receive"]);
        assert_eq!((code, l.len(), l[0]["text"].as_str()), (0, 1, Some("late")), "{l:?}");
        // ... and the conversation goes on both ways: bob's sessions are stale, so he starts a
        // new one.
        let (code, l) = tacit(&b, &[], &["send", "alice", "three"]);
        assert_eq!(code, 0, "{l:?}");
        let (code, l) = tacit(&a, &pass, &["receive"]);
        assert_eq!((code, l[0]["text"].as_str()), (0, Some("three")), "{l:?}");
        assert_eq!(tacit(&a, &pass, &["send", "bob", "four"]).0, 0);
        let (code, l) = tacit(&b, &[], &["receive"]);
        assert_eq!((code, l.last().unwrap()["text"].as_str()), (0, Some("four")), "{l:?}");

        // prekeys_generation damaged: treated as lost, the prekeys replaced.
        std::fs::write(b.join("prekeys_generation"), b"TPG1 torn").unwrap();
        let (code, l) = tacit(&b, &[], &["receive"]);
        assert_eq!(code, 0, "{l:?}");
        let w = warnings(&l);
        assert!(w.iter().any(|w| w.contains("prekeys_generation was damaged")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("prekeys") && w.contains("replaced")), "{w:?}");
        assert_eq!(tacit(&b, &[], &["receive"]).1.len(), 0, "said once");
        assert_eq!(tacit(&a, &pass, &["send", "bob", "five"]).0, 0);
        let (code, l) = tacit(&b, &[], &["receive"]);
        assert_eq!((code, l[0]["text"].as_str()), (0, Some("five")), "{l:?}");
    })
    .await
    .unwrap();
    stop().await;
}

/// Runs `tacit --home HOME ARGS` (human output) on a pseudo-terminal made by util-linux
/// `script`, typing `input`; the exit code and everything shown. `None` without `script`.
fn on_terminal(home: &Path, input: &str, args: &[&str]) -> Option<(i32, String)> {
    use std::io::Write;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = vec![quote(env!("CARGO_BIN_EXE_tacit")), "--home".into(), quote(home.to_str().unwrap())];
    line.extend(args.iter().map(|a| quote(a)));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env_remove("TACIT_PASSPHRASE")
        .env_remove("TACIT_HOME")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.code().unwrap(), shown))
}

/// The files `account forget` removes.
const STORE_FILES: [&str; 11] = [
    "store.db",
    "store.db-wal",
    "store.db-shm",
    "store.salt",
    "store.key",
    "store.salt.new",
    "store.key.new",
    "generations",
    "prekeys_generation",
    ".generations.tmp",
    ".store.key.tmp",
];

/// Issue 8, point 12: the server's data is reset under an account. `receive` and
/// `account delete` say that the server does not know the account and name `account forget`;
/// `account forget` needs `--yes` without a terminal, then removes the local account, and
/// the name can be registered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_data_was_reset_names_the_way_out_and_account_forget_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let (url, addr, stop) = start_server(&data, "127.0.0.1:0".parse().unwrap()).await;
    let root = dir.path().to_owned();
    let (a, b) = (root.join("a"), root.join("b"));
    {
        let (a, b, url) = (a.clone(), b.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            create(&a, &[], &url, "alice");
            create(&b, &[("TACIT_PASSPHRASE", "bob's")], &url, "bob");
        })
        .await
        .unwrap();
    }
    stop().await;
    std::fs::remove_dir_all(&data).unwrap();
    let (_, _, stop) = start_server(&data, addr).await;
    tokio::task::spawn_blocking(move || {
        for args in [&["receive"][..], &["account", "delete"], &["send", "bob", "hi"]] {
            let (code, l) = tacit(&a, &[], args);
            let message = error_message(&l);
            assert_eq!((code, l[0]["kind"].as_str()), (5, Some("not_found")), "{args:?}: {l:?}");
            assert!(message.contains(&format!("{url} does not know the account alice")), "{message}");
            assert!(message.contains("tacit account forget"), "{message}");
        }
        let (code, l) = tacit(&a, &[], &["account", "create", "--server", &url, "--name", "alice"]);
        assert_eq!(code, 2, "{l:?}");
        assert!(error_message(&l).contains("tacit account forget"), "{l:?}");

        // Without a terminal and without --yes: a usage error, nothing removed.
        let before: Vec<_> = STORE_FILES.iter().filter(|f| a.join(f).exists()).collect();
        assert!(before.len() >= 4, "{before:?}");
        let (code, l) = tacit(&a, &[], &["account", "forget"]);
        assert_eq!((code, l[0]["kind"].as_str()), (2, Some("usage")), "{l:?}");
        assert!(error_message(&l).contains("--yes"), "{l:?}");
        assert_eq!(STORE_FILES.iter().filter(|f| a.join(f).exists()).collect::<Vec<_>>(), before);

        // On a terminal (util-linux `script` gives one): another answer than the account's
        // name removes nothing.
        match on_terminal(&a, "bob\n", &["account", "forget"]) {
            Some((code, shown)) => {
                assert_eq!(code, 1, "{shown}");
                assert!(shown.contains("Type the account's name to confirm"), "{shown}");
                assert!(shown.contains("not confirmed: nothing was removed"), "{shown}");
                assert_eq!(STORE_FILES.iter().filter(|f| a.join(f).exists()).collect::<Vec<_>>(), before);
            }
            None => eprintln!("SKIPPED the terminal confirmation: no util-linux `script` here"),
        }

        let (code, l) = tacit(&a, &[], &["account", "forget", "--yes"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(l, vec![serde_json::json!({"type": "account_forgotten", "name": "alice"})]);
        for f in STORE_FILES {
            assert!(!a.join(f).exists(), "{f} is gone");
        }
        assert_eq!(tacit(&a, &[], &["receive"]).0, 5, "no account here");
        assert_eq!(tacit(&a, &[], &["account", "forget", "--yes"]).0, 5, "nothing to forget");
        create(&a, &[], &url, "alice");
        assert_eq!(tacit(&a, &[], &["receive"]).0, 0, "registered again");
        // On a terminal, the account's name typed removes it.
        if let Some((code, shown)) = on_terminal(&a, "alice\n", &["account", "forget"]) {
            assert_eq!(code, 0, "{shown}");
            assert!(shown.contains("removed account alice from this device"), "{shown}");
            assert!(!a.join("store.db").exists());
        }

        // A store whose key file is lost can be forgotten too (its name cannot be read); a
        // wrong passphrase cannot.
        assert_eq!(tacit(&b, &[("TACIT_PASSPHRASE", "wrong")], &["account", "forget", "--yes"]).0, 4);
        assert!(b.join("store.db").exists());
        std::fs::remove_file(b.join("store.salt")).unwrap();
        let (code, l) = tacit(&b, &[], &["account", "forget", "--yes"]);
        assert_eq!(code, 0, "{l:?}");
        assert_eq!(l, vec![serde_json::json!({"type": "account_forgotten", "name": null})]);
        assert!(STORE_FILES.iter().all(|f| !b.join(f).exists()));
    })
    .await
    .unwrap();
    stop().await;
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Issue 8, point 13: `store.db` is created 0600 whatever the umask, and so are its WAL and
/// shared-memory files (SQLite gives them the database's mode); an older store's 0644 file
/// is made 0600 when opened.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_db_and_its_wal_and_shm_files_are_0600_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _, stop) = start_server(&dir.path().join("server"), "127.0.0.1:0".parse().unwrap()).await;
    let root = dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        for (umask, name) in [("022", "alice"), ("000", "bob")] {
            let home = root.join(name);
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_tacit"))
                .env_remove("TACIT_PASSPHRASE")
                .env_remove("TACIT_HOME")
                .args([
                    "--home",
                    home.to_str().unwrap(),
                    "account",
                    "create",
                    "--server",
                    &url,
                    "--name",
                    name,
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert_eq!(mode(&home.join("store.db")), 0o600, "umask {umask}");
            // While a process has the store open, its WAL and shared-memory files exist.
            let mut receive = Command::new("sh")
                .arg("-c")
                .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_tacit"))
                .env_remove("TACIT_PASSPHRASE")
                .env_remove("TACIT_HOME")
                .args(["--home", home.to_str().unwrap(), "receive", "--wait", "3"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let side = [home.join("store.db-wal"), home.join("store.db-shm")];
            while !side.iter().all(|f| f.exists()) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            for f in &side {
                assert_eq!(mode(f), 0o600, "{} with umask {umask}", f.display());
            }
            assert!(receive.wait().unwrap().success());
        }
        // A store made by an older version: store.db 0644, made 0600 at the next open.
        let home = root.join("alice");
        std::fs::set_permissions(home.join("store.db"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert_eq!(tacit(&home, &[], &["receive"]).0, 0);
        assert_eq!(mode(&home.join("store.db")), 0o600);
    })
    .await
    .unwrap();
    stop().await;
}
