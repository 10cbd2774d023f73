//! Chooses Tacit's MLS (RFC 9420) library by measurement: mls-rs (AWS-LC provider) against
//! openmls (libcrux and RustCrypto providers) on Tacit's group workload, in one run of one
//! binary, the libraries alternating at every group size and cipher suite so their figures
//! are comparable.
//!
//! For each library, suite and group size N:
//! 1. A creates a group (timed) and adds B (setup);
//! 2. N clients each generate a KeyPackage (setup; the mean time of one is reported), and A
//!    builds ONE commit adding all N from their KeyPackage bytes, with its Welcome (timed:
//!    decoding the KeyPackages, the commit, serialising commit and Welcome), then merges it;
//! 3. B processes the commit (decode, process, merge);
//! 4. the first new member joins from the Welcome (the ratchet tree inside it);
//! 5. 100-byte application messages, A to B and B to A, at N and in a 2-member group.
//!
//! Settings common to both libraries: commits carry an update path (openmls `add_members`
//! always adds one; mls-rs `CommitOptions::with_path_required(true)`), commits and Welcomes
//! are PublicMessage/Welcome (mls-rs's default; openmls `PURE_PLAINTEXT_WIRE_FORMAT_POLICY`,
//! application messages are always PrivateMessage), one Welcome for all new members, the
//! ratchet tree in the Welcome. Every party works from bytes: what it sends is serialised and
//! what it receives is decoded inside the timed section.
//!
//!   tacit-bench-mls [--json FILE] [--iters K] [--only LIB] [--suite classical|pq]
//!                   [--tree-apart] [N ...]                      (default N: 1000 10000)
//!
//! LIB is one of `mls-rs`, `openmls-libcrux`, `openmls-rustcrypto` (repeatable). `--tree-apart`
//! leaves the ratchet tree out of the Welcome (A exports it, the joiner decodes it): RFC 9420
//! makes the encrypted GroupInfo the HPKE context of every new member's secrets, so with the
//! tree inside, adding N members hashes N times a GroupInfo of size O(N).

use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

/// The payload of every application message.
const PAYLOAD: [u8; 100] = [0x5a; 100];
/// Group creations timed per configuration (median reported).
const CREATE_RUNS: usize = 11;
/// What a run varies besides library, suite and N.
#[derive(Clone, Copy)]
struct Settings {
    /// Application messages per direction.
    iters: usize,
    /// The ratchet tree inside the Welcome (the default), or sent apart (`--tree-apart`): A
    /// exports it after the commit and the joiner decodes it (both inside the timings).
    tree_in_welcome: bool,
}

/// State writes timed after single messages (mls-rs's `write_to_storage`; median reported).
const PERSIST_RUNS: usize = 200;

// ---------------------------------------------------------------------------------------------
// Measurement helpers
// ---------------------------------------------------------------------------------------------

/// CPU time of the whole process (all threads, so rayon's workers count), in nanoseconds.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
    if ok { ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 } else { 0 }
}

/// Times `f` once: its result, wall time and CPU time (all threads).
fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(T, Duration, Duration)> {
    let cpu = cpu_ns();
    let start = Instant::now();
    let out = f()?;
    let wall = start.elapsed();
    Ok((out, wall, Duration::from_nanos(cpu_ns().saturating_sub(cpu))))
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Starts a new peak for VmHWM (Linux: writing 5 to clear_refs resets the peak RSS).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in bytes.
fn peak_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// One library + provider + cipher suite.
#[derive(Clone, Copy)]
struct Config {
    /// `mls-rs`, `openmls-libcrux` or `openmls-rustcrypto` (the `--only` names).
    key: &'static str,
    library: &'static str,
    provider: &'static str,
    suite_id: u16,
    suite: &'static str,
}

/// One measured figure: a time (wall and, for one-shot operations, CPU), a size, or both.
struct Row {
    config: Config,
    n: usize,
    /// Stable identifier of the operation (the JSON and the docs pivot use it).
    op: &'static str,
    label: String,
    time: Option<Duration>,
    cpu: Option<Duration>,
    bytes: Option<usize>,
    /// How the time was obtained ("one run", "median of 2000", ...).
    how: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        config: Config,
        n: usize,
        op: &'static str,
        label: impl Into<String>,
        time: Option<Duration>,
        cpu: Option<Duration>,
        bytes: Option<usize>,
        how: impl Into<String>,
    ) {
        let row = Row { config, n, op, label: label.into(), time, cpu, bytes, how: how.into() };
        eprintln!(
            "  {:<20} suite {:>5} N={:<6} {:<55} {:>12} {:>12}",
            config.key,
            config.suite_id,
            n,
            row.label,
            row.time.map(fmt_time).unwrap_or_default(),
            row.bytes.map(|b| format!("{b} B")).unwrap_or_default()
        );
        self.rows.push(row);
    }

    fn time(&mut self, c: Config, n: usize, op: &'static str, label: &str, t: Duration, how: &str) {
        self.add(c, n, op, label, Some(t), None, None, how);
    }

    fn one_shot(&mut self, c: Config, n: usize, op: &'static str, label: &str, t: (Duration, Duration)) {
        self.add(c, n, op, label, Some(t.0), Some(t.1), None, "one run");
    }

    fn size(&mut self, c: Config, n: usize, op: &'static str, label: &str, bytes: usize) {
        self.add(c, n, op, label, None, None, Some(bytes), "");
    }

    /// The rows of one commit adding N members: build, merge, their sum, the sizes.
    #[allow(clippy::too_many_arguments)]
    fn add_commit(
        &mut self,
        c: Config,
        n: usize,
        s: Settings,
        build: (Duration, Duration),
        merge: (Duration, Duration),
        commit: usize,
        welcome: usize,
    ) {
        self.one_shot(c, n, "add_build", "add N: A builds the commit and Welcome", build);
        self.one_shot(c, n, "add_merge", "add N: A merges its pending commit", merge);
        self.one_shot(
            c,
            n,
            "add_total",
            "add N in one commit (build + merge)",
            (build.0 + merge.0, build.1 + merge.1),
        );
        self.size(c, n, "commit_size", "commit on the wire", commit);
        self.size(c, n, "welcome_size", welcome_label(s), welcome);
    }

    /// With the tree apart, A exports it for the joiners (after the merge: the new epoch's).
    fn exported_tree(
        &mut self,
        c: Config,
        n: usize,
        s: Settings,
        export: impl FnOnce() -> Res<Vec<u8>>,
    ) -> Res<Option<Vec<u8>>> {
        if s.tree_in_welcome {
            return Ok(None);
        }
        let (tree, time, cpu) = timed(export)?;
        self.add(
            c,
            n,
            "tree",
            "A exports the ratchet tree",
            Some(time),
            Some(cpu),
            Some(tree.len()),
            "one run",
        );
        Ok(Some(tree))
    }

    fn unsupported(&mut self, c: Config, n: usize, why: &str) {
        self.add(c, n, "unsupported", format!("not measured: {why}"), None, None, None, "");
    }

    /// The markdown table: one row per library x suite x N x operation.
    fn markdown(&self) -> String {
        let mut s = String::from(
            "| library (provider) | suite | N | operation | time | CPU time | size | measured as |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} ({}) | {} `{}` | {} | {} | {} | {} | {} | {} |",
                r.config.library,
                r.config.provider,
                suite_id(r.config.suite_id),
                r.config.suite,
                group_size(r.n),
                r.label,
                r.time.map(fmt_time).unwrap_or_default(),
                r.cpu.map(fmt_time).unwrap_or_default(),
                r.bytes.map(fmt_bytes).unwrap_or_default(),
                r.how
            );
        }
        s
    }

    fn json(&self, sizes: &[usize], settings: Settings) -> String {
        let mut s = String::from("{\n  \"sizes\": [");
        s += &sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        let _ = write!(
            s,
            "],\n  \"message_iterations\": {},\n  \"tree_in_welcome\": {},\n  \"rows\": [\n",
            settings.iters, settings.tree_in_welcome
        );
        for (i, r) in self.rows.iter().enumerate() {
            let opt_ms =
                |d: Option<Duration>| d.map_or("null".into(), |d| format!("{:.6}", d.as_secs_f64() * 1e3));
            let _ = writeln!(
                s,
                "    {{\"key\": {}, \"library\": {}, \"provider\": {}, \"suite_id\": {}, \"suite\": {}, \
                 \"n\": {}, \"op\": {}, \"label\": {}, \"ms\": {}, \"cpu_ms\": {}, \"bytes\": {}, \"how\": {}}}{}",
                js(r.config.key),
                js(r.config.library),
                js(r.config.provider),
                r.config.suite_id,
                js(r.config.suite),
                r.n,
                js(r.op),
                js(&r.label),
                opt_ms(r.time),
                opt_ms(r.cpu),
                r.bytes.map_or("null".into(), |b| b.to_string()),
                js(&r.how),
                if i + 1 < self.rows.len() { "," } else { "" }
            );
        }
        s + "  ]\n}\n"
    }
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out + "\""
}

/// A cipher suite id as the registries write it (private-use ids also in decimal).
fn suite_id(id: u16) -> String {
    if id >= 0xF000 { format!("0x{id:04X} ({id})") } else { format!("0x{id:04X}") }
}

fn fmt_time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 { format!("{us:.1} µs") } else { format!("{:.1} ms", us / 1000.0) }
}

fn fmt_bytes(b: usize) -> String {
    let digits = b.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out + " B"
}

fn group_size(n: usize) -> String {
    if n == 2 { "2-member group".into() } else { fmt_bytes(n).trim_end_matches(" B").to_string() }
}

/// The four message timings of one group (A to B, then B to A), each the median of `iters`.
struct Messages {
    enc_a: Duration,
    dec_b: Duration,
    enc_b: Duration,
    dec_a: Duration,
    size: usize,
}

fn welcome_label(s: Settings) -> &'static str {
    if s.tree_in_welcome {
        "Welcome on the wire (ratchet tree inside)"
    } else {
        "Welcome on the wire (ratchet tree apart)"
    }
}

fn report_messages(report: &mut Report, c: Config, n: usize, m: &Messages, s: Settings) {
    let how = format!("median of {}", s.iters);
    report.time(c, n, "enc_a", "100 B message: A encrypts", m.enc_a, &how);
    report.time(c, n, "dec_b", "100 B message: B decrypts", m.dec_b, &how);
    report.time(c, n, "enc_b", "100 B message: B encrypts", m.enc_b, &how);
    report.time(c, n, "dec_a", "100 B message: A decrypts", m.dec_a, &how);
    report.size(c, n, "msg_size", "100 B message on the wire", m.size);
}

// ---------------------------------------------------------------------------------------------
// mls-rs
// ---------------------------------------------------------------------------------------------

mod mlsrs {
    use super::*;
    use mls_rs::client_builder::MlsConfig;
    use mls_rs::error::IntoAnyError;
    use mls_rs::group::{ExportedTree, ReceivedMessage};
    use mls_rs::identity::SigningIdentity;
    use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
    use mls_rs::mls_rs_codec::MlsDecode;
    use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
    use mls_rs::{
        CipherSuite, CipherSuiteProvider, Client, CryptoProvider, Group, GroupStateStorage, MlsMessage,
    };
    use mls_rs_crypto_awslc::AwsLcCryptoProvider;

    pub const CLASSICAL: Config = Config {
        key: "mls-rs",
        library: "mls-rs 0.57",
        provider: "mls-rs-crypto-awslc",
        suite_id: 1,
        suite: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
    };
    /// mls-rs's hybrid suite: ML-KEM-768 + X25519 combined as X-Wing does (SHA3-256 over both
    /// shared secrets), HKDF-SHA256, AES-128-GCM, Ed25519; a private-use id, no IANA code point.
    pub const PQ: Config = Config {
        suite_id: 65100,
        suite: "ML_KEM_768_X25519 (X-Wing-style hybrid, AES128GCM, SHA256, Ed25519)",
        ..CLASSICAL
    };

    /// A client with its own signature key, AWS-LC crypto, in-memory storage, and commit
    /// options as in the module comment (path on, one Welcome, the tree in it or not).
    fn client(suite: CipherSuite, name: &str, tree_in_welcome: bool) -> Res<Client<impl MlsConfig + use<>>> {
        let crypto = AwsLcCryptoProvider::new();
        let cs = crypto.cipher_suite_provider(suite).ok_or("cipher suite not supported by the provider")?;
        let (secret, public) = cs.signature_key_generate()?;
        let identity =
            SigningIdentity::new(BasicCredential::new(name.as_bytes().to_vec()).into_credential(), public);
        let options = CommitOptions::new()
            .with_path_required(true)
            .with_ratchet_tree_extension(tree_in_welcome)
            .with_single_welcome_message(true);
        Ok(Client::builder()
            .identity_provider(BasicIdentityProvider)
            .crypto_provider(crypto)
            .mls_rules(DefaultMlsRules::new().with_commit_options(options))
            .signing_identity(identity, secret, suite)
            .build())
    }

    /// A's group with B in it: (A's group, B's group), and the median creation time.
    fn pair<C: MlsConfig>(a: &Client<C>, b: &Client<C>, s: Settings) -> Res<(Group<C>, Group<C>, Duration)> {
        let mut creates = Vec::new();
        let mut group = None;
        for _ in 0..CREATE_RUNS {
            let start = Instant::now();
            let g = a.create_group(Default::default(), Default::default(), None)?;
            creates.push(start.elapsed());
            group = Some(g);
        }
        let mut a_group = group.ok_or("no group")?;
        let kp = b.generate_key_package_message(Default::default(), Default::default(), None)?;
        let out = a_group.commit_builder().add_member(kp)?.build()?;
        a_group.apply_pending_commit()?;
        let welcome = out.welcome_messages.first().ok_or("no Welcome")?;
        let tree = (!s.tree_in_welcome).then(|| a_group.export_tree());
        let (b_group, _) = b.join_group(tree, welcome, None)?;
        Ok((a_group, b_group, median(&mut creates)))
    }

    /// One application message from `from` to `to`: (encrypt time, decrypt time, wire size).
    fn send<C: MlsConfig>(from: &mut Group<C>, to: &mut Group<C>) -> Res<(Duration, Duration, usize)> {
        let start = Instant::now();
        let wire = from.encrypt_application_message(&PAYLOAD, vec![])?.to_bytes()?;
        let enc = start.elapsed();
        let start = Instant::now();
        match to.process_incoming_message(MlsMessage::from_bytes(&wire)?)? {
            ReceivedMessage::ApplicationMessage(m) if m.data() == PAYLOAD => {}
            _ => return Err("the message did not decrypt to its payload".into()),
        }
        Ok((enc, start.elapsed(), wire.len()))
    }

    fn messages<C: MlsConfig>(a: &mut Group<C>, b: &mut Group<C>, iters: usize) -> Res<Messages> {
        let (mut ea, mut db, mut eb, mut da) = (vec![], vec![], vec![], vec![]);
        let mut size = 0;
        for _ in 0..iters {
            let (e, d, s) = send(a, b)?;
            ea.push(e);
            db.push(d);
            size = s;
        }
        for _ in 0..iters {
            let (e, d, _) = send(b, a)?;
            eb.push(e);
            da.push(d);
        }
        Ok(Messages {
            enc_a: median(&mut ea),
            dec_b: median(&mut db),
            enc_b: median(&mut eb),
            dec_a: median(&mut da),
            size,
        })
    }

    /// mls-rs keeps the group in memory until `write_to_storage`, which writes a snapshot of
    /// the whole state: the median time of that call after one message at A (openmls writes its
    /// storage inside every call instead). Then the same with
    /// `write_to_storage_without_ratchet_tree`, for an application that stores the tree apart
    /// (it changes only with commits) and loads with `load_group_with_ratchet_tree`.
    fn persist_after_message<C: MlsConfig>(
        report: &mut Report,
        c: Config,
        n: usize,
        a: &mut Group<C>,
    ) -> Res<()> {
        let (mut whole, mut without_tree) = (Vec::new(), Vec::new());
        for _ in 0..PERSIST_RUNS {
            a.encrypt_application_message(&PAYLOAD, vec![])?;
            let start = Instant::now();
            a.write_to_storage()?;
            whole.push(start.elapsed());
            a.encrypt_application_message(&PAYLOAD, vec![])?;
            let start = Instant::now();
            a.write_to_storage_without_ratchet_tree()?;
            without_tree.push(start.elapsed());
        }
        let how = format!("median of {PERSIST_RUNS}");
        report.time(c, n, "persist_msg", "A stores its state after one message", median(&mut whole), &how);
        report.time(
            c,
            n,
            "persist_msg_no_tree",
            "the same without the ratchet tree",
            median(&mut without_tree),
            &how,
        );
        Ok(())
    }

    /// A's whole state, as mls-rs stores it: time of `write_to_storage` and the stored size.
    fn store_state<C: MlsConfig>(
        report: &mut Report,
        c: Config,
        n: usize,
        a: &Client<C>,
        group: &mut Group<C>,
    ) -> Res<()> {
        let ((), time, cpu) = timed(|| Ok(group.write_to_storage()?))?;
        let stored = a.group_state_storage().state(group.group_id()).map_err(IntoAnyError::into_any_error)?;
        let how = "one run";
        report.add(
            c,
            n,
            "state",
            "A stores its group state",
            Some(time),
            Some(cpu),
            stored.map(|s| s.len()),
            how,
        );
        Ok(())
    }

    /// Messages in a 2-member group.
    pub fn small(report: &mut Report, c: Config, s: Settings) -> Res<()> {
        let suite = CipherSuite::new(c.suite_id);
        let (a, b) = (client(suite, "A", s.tree_in_welcome)?, client(suite, "B", s.tree_in_welcome)?);
        let (mut a_group, mut b_group, create) = pair(&a, &b, s)?;
        report.time(c, 2, "create", "create group (A alone)", create, &format!("median of {CREATE_RUNS}"));
        store_state(report, c, 2, &a, &mut a_group)?;
        let m = messages(&mut a_group, &mut b_group, s.iters)?;
        report_messages(report, c, 2, &m, s);
        persist_after_message(report, c, 2, &mut a_group)?;
        Ok(())
    }

    /// The whole workload at group size N (plus A and B).
    pub fn large(report: &mut Report, c: Config, n: usize, s: Settings) -> Res<()> {
        let suite = CipherSuite::new(c.suite_id);
        let (a, b) = (client(suite, "A", s.tree_in_welcome)?, client(suite, "B", s.tree_in_welcome)?);
        let (mut a_group, mut b_group, _) = pair(&a, &b, s)?;

        // Setup: N clients, each with its own keys and storage, generate one KeyPackage each;
        // only the first (the one that will join) is kept, the others' secrets are dropped.
        let joiner = client(suite, "member 0", s.tree_in_welcome)?;
        let mut key_packages = Vec::with_capacity(n);
        let mut generating = Duration::ZERO;
        for i in 0..n {
            let other;
            let member = if i == 0 {
                &joiner
            } else {
                other = client(suite, &format!("member {i}"), s.tree_in_welcome)?;
                &other
            };
            let start = Instant::now();
            let kp = member.generate_key_package_message(Default::default(), Default::default(), None)?;
            generating += start.elapsed();
            key_packages.push(kp.to_bytes()?);
        }
        report.add(
            c,
            n,
            "kp",
            "generate one KeyPackage",
            Some(generating / n as u32),
            None,
            key_packages.first().map(Vec::len),
            format!("mean of {n}"),
        );

        // A: one commit adding all N, from their KeyPackage bytes.
        let ((commit, welcome), build, build_cpu) = timed(|| {
            let mut builder = a_group.commit_builder();
            for kp in &key_packages {
                builder = builder.add_member(MlsMessage::from_bytes(kp)?)?;
            }
            let out = builder.build()?;
            let welcome = out.welcome_messages.first().ok_or("no Welcome")?.to_bytes()?;
            Ok((out.commit_message.to_bytes()?, welcome))
        })?;
        drop(key_packages);
        let ((), merge, merge_cpu) = timed(|| Ok(a_group.apply_pending_commit().map(|_| ())?))?;
        report.add_commit(c, n, s, (build, build_cpu), (merge, merge_cpu), commit.len(), welcome.len());
        let tree = report.exported_tree(c, n, s, || Ok(a_group.export_tree().to_bytes()?))?;

        // B applies the commit.
        let ((), process, process_cpu) =
            timed(|| Ok(b_group.process_incoming_message(MlsMessage::from_bytes(&commit)?).map(|_| ())?))?;
        report.one_shot(c, n, "process", "B processes the commit", (process, process_cpu));

        // The first new member joins.
        let (joined, join, join_cpu) = timed(|| {
            let tree = tree.as_deref().map(|mut t| ExportedTree::mls_decode(&mut t)).transpose()?;
            Ok(joiner.join_group(tree, &MlsMessage::from_bytes(&welcome)?, None)?.0)
        })?;
        report.one_shot(c, n, "join", "a new member joins from the Welcome", (join, join_cpu));
        if joined.roster().members_iter().count() != n + 2 {
            return Err("the joiner's group does not have N + 2 members".into());
        }
        drop(joined);

        store_state(report, c, n, &a, &mut a_group)?;

        let m = messages(&mut a_group, &mut b_group, s.iters)?;
        report_messages(report, c, n, &m, s);
        persist_after_message(report, c, n, &mut a_group)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// openmls
// ---------------------------------------------------------------------------------------------

mod openmls_bench {
    use super::*;
    use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
    use openmls::prelude::*;
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_memory_storage::MemoryStorage;

    pub const LIBCRUX: Config = Config {
        key: "openmls-libcrux",
        library: "openmls 0.9.2",
        provider: "openmls_libcrux_crypto",
        suite_id: 1,
        suite: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
    };
    pub const RUSTCRYPTO: Config =
        Config { key: "openmls-rustcrypto", provider: "openmls_rust_crypto", ..LIBCRUX };
    /// draft-ietf-mls-pq-ciphersuites' ML-KEM-768 + X25519 (X-Wing draft 06) suite, the same
    /// primitives as mls-rs's hybrid suite (provisional code point 0x004F).
    pub const PQ_SUITE: (u16, &str) = (0x004F, "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (X-Wing)");

    pub fn pq(c: Config) -> Config {
        Config { suite_id: PQ_SUITE.0, suite: PQ_SUITE.1, ..c }
    }

    /// A provider: crypto, randomness and the in-memory storage every openmls call writes to.
    pub trait Provider: OpenMlsProvider<StorageProvider = MemoryStorage> {
        fn create() -> Self;
    }
    impl Provider for openmls_libcrux_crypto::Provider {
        fn create() -> Self {
            Self::default()
        }
    }
    impl Provider for openmls_rust_crypto::OpenMlsRustCrypto {
        fn create() -> Self {
            Self::default()
        }
    }

    /// A party: its provider (with its storage), signature key and credential.
    struct Party<P> {
        provider: P,
        signer: SignatureKeyPair,
        credential: CredentialWithKey,
    }

    fn party<P: Provider>(suite: Ciphersuite, name: &str) -> Res<Party<P>> {
        let signer = SignatureKeyPair::new(suite.signature_algorithm())?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Party { provider: P::create(), signer, credential })
    }

    fn config(suite: Ciphersuite, s: Settings) -> MlsGroupCreateConfig {
        MlsGroupCreateConfig::builder()
            .ciphersuite(suite)
            .use_ratchet_tree_extension(s.tree_in_welcome)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build()
    }

    fn suite_of(c: Config) -> Res<Ciphersuite> {
        Ok(Ciphersuite::try_from(c.suite_id)?)
    }

    fn decode(bytes: &[u8]) -> Res<MlsMessageIn> {
        Ok(MlsMessageIn::tls_deserialize_exact(bytes)?)
    }

    /// Decodes, processes and merges a commit.
    fn apply_commit<P: Provider>(group: &mut MlsGroup, provider: &P, commit: &[u8]) -> Res<()> {
        let processed = group.process_message(provider, decode(commit)?.try_into_protocol_message()?)?;
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                Ok(group.merge_staged_commit(provider, *staged)?)
            }
            _ => Err("expected a commit".into()),
        }
    }

    /// Joins from a Welcome, with the ratchet tree apart when it is not inside.
    fn join<P: Provider>(
        provider: &P,
        config: &MlsGroupCreateConfig,
        welcome: &[u8],
        tree: Option<&[u8]>,
    ) -> Res<MlsGroup> {
        let MlsMessageBodyIn::Welcome(welcome) = decode(welcome)?.extract() else {
            return Err("expected a Welcome".into());
        };
        let tree = tree.map(RatchetTreeIn::tls_deserialize_exact).transpose()?;
        Ok(StagedWelcome::new_from_welcome(provider, config.join_config(), welcome, tree)?
            .into_group(provider)?)
    }

    /// A and B, each with their group, and the median creation time of A's.
    type Pair<P> = (Party<P>, MlsGroup, Party<P>, MlsGroup, Duration);

    /// A's group with B in it, and the median creation time.
    fn pair<P: Provider>(suite: Ciphersuite, s: Settings) -> Res<Pair<P>> {
        let config = config(suite, s);
        let a = party::<P>(suite, "A")?;
        let b = party::<P>(suite, "B")?;
        // Timed creations on a scratch provider, so that A's storage holds only its group.
        let scratch = P::create();
        let mut creates = Vec::new();
        for _ in 1..CREATE_RUNS {
            let start = Instant::now();
            MlsGroup::new(&scratch, &a.signer, &config, a.credential.clone())?;
            creates.push(start.elapsed());
        }
        let start = Instant::now();
        let mut a_group = MlsGroup::new(&a.provider, &a.signer, &config, a.credential.clone())?;
        creates.push(start.elapsed());
        let kp = KeyPackage::builder().build(suite, &b.provider, &b.signer, b.credential.clone())?;
        let (_, welcome, _) = a_group.add_members(&a.provider, &a.signer, &[kp.key_package().clone()])?;
        a_group.merge_pending_commit(&a.provider)?;
        let tree = a_group.export_ratchet_tree().tls_serialize_detached()?;
        let b_group =
            join(&b.provider, &config, &welcome.to_bytes()?, Some(&tree[..]).filter(|_| !s.tree_in_welcome))?;
        Ok((a, a_group, b, b_group, median(&mut creates)))
    }

    fn send<P: Provider>(
        from: (&mut MlsGroup, &Party<P>),
        to: (&mut MlsGroup, &Party<P>),
    ) -> Res<(Duration, Duration, usize)> {
        let start = Instant::now();
        let wire = from.0.create_message(&from.1.provider, &from.1.signer, &PAYLOAD)?.to_bytes()?;
        let enc = start.elapsed();
        let start = Instant::now();
        let processed = to.0.process_message(&to.1.provider, decode(&wire)?.try_into_protocol_message()?)?;
        let ProcessedMessageContent::ApplicationMessage(m) = processed.into_content() else {
            return Err("expected an application message".into());
        };
        if m.into_bytes() != PAYLOAD {
            return Err("the message did not decrypt to its payload".into());
        }
        Ok((enc, start.elapsed(), wire.len()))
    }

    fn messages<P: Provider>(
        a: (&mut MlsGroup, &Party<P>),
        b: (&mut MlsGroup, &Party<P>),
        iters: usize,
    ) -> Res<Messages> {
        let (a_group, a) = a;
        let (b_group, b) = b;
        let (mut ea, mut db, mut eb, mut da) = (vec![], vec![], vec![], vec![]);
        let mut size = 0;
        for _ in 0..iters {
            let (e, d, s) = send((&mut *a_group, a), (&mut *b_group, b))?;
            ea.push(e);
            db.push(d);
            size = s;
        }
        for _ in 0..iters {
            let (e, d, _) = send((&mut *b_group, b), (&mut *a_group, a))?;
            eb.push(e);
            da.push(d);
        }
        Ok(Messages {
            enc_a: median(&mut ea),
            dec_b: median(&mut db),
            enc_b: median(&mut eb),
            dec_a: median(&mut da),
            size,
        })
    }

    /// Bytes of everything in a party's storage (keys and values, as openmls wrote them).
    fn stored_bytes<P: Provider>(p: &Party<P>) -> usize {
        p.provider.storage().values.read().map_or(0, |v| v.iter().map(|(k, v)| k.len() + v.len()).sum())
    }

    pub fn small<P: Provider>(report: &mut Report, c: Config, s: Settings) -> Res<()> {
        let suite = suite_of(c)?;
        let (a, mut a_group, b, mut b_group, create) = pair::<P>(suite, s)?;
        report.time(c, 2, "create", "create group (A alone)", create, &format!("median of {CREATE_RUNS}"));
        let m = messages((&mut a_group, &a), (&mut b_group, &b), s.iters)?;
        report_messages(report, c, 2, &m, s);
        report.size(c, 2, "state", "A's stored group state (openmls storage)", stored_bytes(&a));
        Ok(())
    }

    pub fn large<P: Provider>(report: &mut Report, c: Config, n: usize, s: Settings) -> Res<()> {
        let suite = suite_of(c)?;
        let config = config(suite, s);
        let (a, mut a_group, b, mut b_group, _) = pair::<P>(suite, s)?;

        // Setup: N clients with their own signature keys generate one KeyPackage each. The
        // joiner (member 0) has its own provider; the others share one (their private keys are
        // never used), dropped once their KeyPackages are serialised.
        let joiner = party::<P>(suite, "member 0")?;
        let mut key_packages = Vec::with_capacity(n);
        let mut generating = Duration::ZERO;
        {
            let pool = P::create();
            for i in 0..n {
                let other;
                let (member, provider) = if i == 0 {
                    (&joiner, &joiner.provider)
                } else {
                    other = party::<P>(suite, &format!("member {i}"))?;
                    (&other, &pool)
                };
                let start = Instant::now();
                let bundle = KeyPackage::builder().build(
                    suite,
                    provider,
                    &member.signer,
                    member.credential.clone(),
                )?;
                generating += start.elapsed();
                key_packages.push(MlsMessageOut::from(bundle.key_package().clone()).to_bytes()?);
            }
        }
        report.add(
            c,
            n,
            "kp",
            "generate one KeyPackage",
            Some(generating / n as u32),
            None,
            key_packages.first().map(Vec::len),
            format!("mean of {n}"),
        );

        // A: one commit adding all N, from their KeyPackage bytes (decoded and verified).
        let ((commit, welcome), build, build_cpu) = timed(|| {
            let mut kps = Vec::with_capacity(key_packages.len());
            for bytes in &key_packages {
                let MlsMessageBodyIn::KeyPackage(kp) = decode(bytes)?.extract() else {
                    return Err("expected a KeyPackage".into());
                };
                kps.push(kp.validate(a.provider.crypto(), ProtocolVersion::Mls10)?);
            }
            let (commit, welcome, _group_info) = a_group.add_members(&a.provider, &a.signer, &kps)?;
            Ok((commit.to_bytes()?, welcome.to_bytes()?))
        })?;
        drop(key_packages);
        let ((), merge, merge_cpu) = timed(|| Ok(a_group.merge_pending_commit(&a.provider)?))?;
        report.add_commit(c, n, s, (build, build_cpu), (merge, merge_cpu), commit.len(), welcome.len());
        let tree = report
            .exported_tree(c, n, s, || Ok(a_group.export_ratchet_tree().tls_serialize_detached()?))?;

        let ((), process, process_cpu) = timed(|| apply_commit(&mut b_group, &b.provider, &commit))?;
        report.one_shot(c, n, "process", "B processes the commit", (process, process_cpu));

        let (joined, join_time, join_cpu) =
            timed(|| join(&joiner.provider, &config, &welcome, tree.as_deref()))?;
        report.one_shot(c, n, "join", "a new member joins from the Welcome", (join_time, join_cpu));
        if joined.members().count() != n + 2 {
            return Err("the joiner's group does not have N + 2 members".into());
        }
        drop(joined);

        // openmls wrote A's state inside the calls above; its size as stored.
        report.size(c, n, "state", "A's stored group state (openmls storage)", stored_bytes(&a));

        let m = messages((&mut a_group, &a), (&mut b_group, &b), s.iters)?;
        report_messages(report, c, n, &m, s);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// The configurations of one suite kind (classical or post-quantum), in the order they run.
fn configs(pq: bool) -> Vec<Config> {
    use openmls_bench::{LIBCRUX, RUSTCRYPTO, pq as opq};
    if pq {
        vec![mlsrs::PQ, opq(LIBCRUX), opq(RUSTCRYPTO)]
    } else {
        vec![mlsrs::CLASSICAL, LIBCRUX, RUSTCRYPTO]
    }
}

/// Runs one configuration at one size (2: messages only); a failure is reported as a row.
fn run(report: &mut Report, c: Config, n: usize, s: Settings) {
    use openmls_libcrux_crypto::Provider as Libcrux;
    use openmls_rust_crypto::OpenMlsRustCrypto as RustCrypto;
    eprintln!("{} suite {} N={n}", c.key, c.suite_id);
    reset_peak_rss();
    let result = match (c.key, n) {
        ("mls-rs", 2) => mlsrs::small(report, c, s),
        ("mls-rs", _) => mlsrs::large(report, c, n, s),
        ("openmls-libcrux", 2) => openmls_bench::small::<Libcrux>(report, c, s),
        ("openmls-libcrux", _) => openmls_bench::large::<Libcrux>(report, c, n, s),
        (_, 2) => openmls_bench::small::<RustCrypto>(report, c, s),
        _ => openmls_bench::large::<RustCrypto>(report, c, n, s),
    };
    match result {
        Ok(()) if n > 2 => {
            if let Some(rss) = peak_rss() {
                report.size(c, n, "peak_rss", "peak RSS of the whole scenario (setup included)", rss);
            }
        }
        Ok(()) => {}
        Err(e) => report.unsupported(c, n, &e.to_string()),
    }
}

fn main() -> Res<()> {
    let mut sizes = Vec::new();
    let mut json = None;
    let mut settings = Settings { iters: 2000, tree_in_welcome: true };
    let mut only: Vec<String> = Vec::new();
    let mut suites = vec![false, true];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = Some(args.next().ok_or("--json needs a file")?),
            "--iters" => settings.iters = args.next().ok_or("--iters needs a number")?.parse()?,
            "--only" => only.push(args.next().ok_or("--only needs a library")?),
            "--suite" => {
                suites = match args.next().as_deref() {
                    Some("classical") => vec![false],
                    Some("pq") => vec![true],
                    _ => return Err("--suite takes classical or pq".into()),
                }
            }
            "--tree-apart" => settings.tree_in_welcome = false,
            n => sizes.push(n.parse::<usize>().map_err(|_| format!("not a group size: {n}"))?),
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10_000];
    }
    let wanted = |c: &Config| only.is_empty() || only.iter().any(|o| o == c.key);

    let mut report = Report::default();
    // Messages in a 2-member group first, then each size; at every step the libraries alternate.
    for n in std::iter::once(2).chain(sizes.iter().copied()) {
        for &pq in &suites {
            for c in configs(pq).into_iter().filter(wanted) {
                run(&mut report, c, n, settings);
            }
        }
    }
    print!("{}", report.markdown());
    if let Some(path) = json {
        std::fs::write(&path, report.json(&sizes, settings))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
