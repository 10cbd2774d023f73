//! History transfer: the archive file end to end on real SQLCipher stores, the refusals
//! (tampered, truncated, wrong key, decompression bomb) with nothing stored, and resumed
//! uploads and downloads through a blob stand-in that stops after k chunks. The same
//! round trip over the real server is at the end, ignored until the server's blob
//! endpoints are merged.

#[path = "../../tests/common/mod.rs"]
// Included as `server_tests.rs` includes it (its copy is private to it).
#[allow(clippy::duplicate_mod)]
#[macro_use]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use tacit_api as api;
use tacit_protocol::{AccountName, PrekeyPolicy};

use super::blobs::BlobTransport;
use super::records::{ContactRecord, MessageRecord, RecordWriter};
use super::*;
use crate::client::{NewAccount, now};
use crate::store::HistoryEntry;

/// A contact with a real signed device list.
fn contact(name: &str, verified: bool) -> ContactRecord {
    let name = AccountName::new(name).unwrap();
    let new = NewAccount::generate(&name, &PrekeyPolicy::default(), now()).unwrap();
    ContactRecord {
        account_key: *new.account.public().as_bytes(),
        device_list: new.list.to_bytes(),
        name,
        verified,
    }
}

fn put_contact(c: &Client, r: &ContactRecord) {
    let row = store::ContactRow {
        account_key: r.account_key,
        device_list: r.device_list.clone(),
        verified: r.verified,
        pending: None,
    };
    store::put_contact(c.store.conn(), r.name.as_str(), &row).unwrap();
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rand(u64);
impl Rand {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the", "a", "to", "and", "you", "I", "it", "is", "that", "for", "on", "we", "meet", "tomorrow", "at",
    "lunch", "ok", "sounds", "good", "see", "later", "can", "call", "me", "when", "free", "thanks", "sure",
    "what", "time", "train", "late", "home", "now", "did", "read", "paper", "about", "tacit", "keys", "😀",
    "weekend", "plans", "coffee", "send", "photo", "address", "please", "yes", "no", "maybe", "love", "it's",
    "done", "review", "draft", "tonight", "running", "minutes", "café", "station", "platform", "ticket",
];

/// A chat-like text: mostly short, some long (lengths 2 to ~2,000 bytes, median ~60).
fn realistic_text(r: &mut Rand) -> String {
    let words = match r.below(100) {
        0..=59 => 1 + r.below(12),
        60..=89 => 10 + r.below(40),
        _ => 50 + r.below(300),
    };
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(if r.below(12) == 0 { '\n' } else { ' ' });
        }
        s.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
    }
    if r.below(5) == 0 {
        s.push_str(&format!(" {}", r.next() % 100_000));
    }
    s
}

/// Text that barely compresses (so an archive spans several blob chunks).
fn noisy_text(r: &mut Rand, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len).map(|_| ALPHABET[r.below(64) as usize] as char).collect()
}

/// Stores one message as the messaging code would (in SQL, so the helpers do not depend on
/// the store's Rust types, which other parts of issue 9 extend).
fn put_row(
    conn: &Connection,
    peer: &str,
    device: u32,
    outgoing: bool,
    text: &str,
    server_time: Option<i64>,
    sent_time: i64,
) {
    conn.execute(
        "INSERT INTO messages (peer, device, outgoing, text, server_time_ms, sent_time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![peer, device, outgoing, text, server_time, sent_time],
    )
    .unwrap();
}

/// Fills `c`'s history with `n` messages with `peers` (in one transaction, as a device
/// would have stored them over time).
fn fill(c: &mut Client, peers: &[&str], n: usize, text: &mut dyn FnMut(&mut Rand) -> String) {
    let mut r = Rand(0x9e37_79b9_7f4a_7c15);
    let tx = c.store.tx().unwrap();
    for i in 0..n {
        let outgoing = r.below(2) == 0;
        let device = if outgoing { 0 } else { 1 + r.below(3) as u32 };
        let text = text(&mut r);
        let server_time = (r.below(20) != 0).then_some(1_700_000_000_000 + i as i64 * 1000);
        let sent_time = 1_700_000_000_000 + i as i64 * 1000 - r.below(500) as i64;
        put_row(&tx, peers[i % peers.len()], device, outgoing, &text, server_time, sent_time);
    }
    tx.commit().unwrap();
}

fn count(c: &Client, table: &str) -> i64 {
    c.store.conn().query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

fn archive_of(sealed: SealedFile) -> HistoryArchive {
    HistoryArchive {
        blob_id: [7; 16],
        key: sealed.key,
        size: sealed.size,
        plain_size: sealed.plain_size,
        digest: sealed.digest,
    }
}

/// An approver (alice, device 1) with two contacts and `n` messages, its archive written
/// to `dir/archive`, and a fresh device of the same account to import into.
struct Setup {
    _dirs: [tempfile::TempDir; 2],
    old: Client,
    new: Client,
    path: std::path::PathBuf,
    contacts: Vec<ContactRecord>,
}

fn setup(n: usize) -> Setup {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut old = Client::offline(d1.path(), "alice").unwrap();
    let contacts = vec![contact("bob", true), contact("carol", false)];
    for c in &contacts {
        put_contact(&old, c);
    }
    fill(&mut old, &["bob", "carol", "alice"], n, &mut realistic_text);
    let new = Client::offline(d2.path(), "alice").unwrap();
    let path = d1.path().join("archive");
    Setup { _dirs: [d1, d2], old, new, path, contacts }
}

fn import(s: &mut Setup, a: &HistoryArchive) -> Result<ImportSummary, HistoryError> {
    let me = s.new.me.name.clone();
    import_file(&mut s.new.store, &me, &s.path, a)
}

fn all_history(c: &Client) -> Vec<HistoryEntry> {
    ["bob", "carol", "alice"].iter().flat_map(|p| c.store.history(p).unwrap()).collect()
}

#[test]
fn a_thousand_messages_round_trip_through_an_archive_file() {
    let mut s = setup(1000);
    let a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&s.path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(a.size < a.plain_size, "compressed: {} of {}", a.size, a.plain_size);
    // The reference survives the provisioning message's encoding.
    let a = HistoryArchive::from_bytes(&a.to_bytes()).unwrap();
    let before = all_history(&s.old);
    assert_eq!(before.len(), 1000);
    assert!(all_history(&s.new).is_empty());
    let summary = import(&mut s, &a).unwrap();
    assert_eq!(summary, ImportSummary { contacts_added: 2, messages_added: 1000, messages_skipped: 0 });
    assert_eq!(all_history(&s.new), before, "history on the new device matches the old one's");
    for c in &s.contacts {
        let row = s.new.store.contact(c.name.as_str()).unwrap().unwrap();
        assert_eq!(
            (row.account_key, &row.device_list, row.verified),
            (c.account_key, &c.device_list, c.verified)
        );
    }
    // Importing again adds nothing (every message is there already).
    let again = import(&mut s, &a).unwrap();
    assert_eq!(again, ImportSummary { contacts_added: 0, messages_added: 0, messages_skipped: 1000 });
    assert_eq!(all_history(&s.new), before);
}

#[test]
fn a_contact_the_device_knows_keeps_its_pin_and_its_own_account_is_not_imported() {
    let mut s = setup(10);
    // The old device holds a contact row for its own account; the new one has its own view
    // of bob (another key) already.
    let own = contact("alice", false);
    put_contact(&s.old, &own);
    let other_bob = contact("bob", false);
    put_contact(&s.new, &other_bob);
    let a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    let summary = import(&mut s, &a).unwrap();
    assert_eq!(summary.contacts_added, 1, "carol only");
    assert_eq!(s.new.store.contact("bob").unwrap().unwrap().account_key, other_bob.account_key);
    assert!(s.new.store.contact("alice").unwrap().is_none());
    assert!(s.new.store.contact("carol").unwrap().is_some());
}

#[test]
fn messages_the_new_device_holds_already_are_skipped() {
    let mut s = setup(50);
    // One message arrived on the new device (fan-out) before the import.
    let first = s.old.store.history("bob").unwrap()[0].clone();
    store::put_message(s.new.store.conn(), &first, Some(1)).unwrap();
    let a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    let summary = import(&mut s, &a).unwrap();
    assert_eq!((summary.messages_added, summary.messages_skipped), (49, 1));
    assert_eq!(all_history(&s.new).len(), 50);
}

/// Asserts the import fails as `expect` says and the new device's store is as it was; then
/// the untampered archive imports (the positive control).
fn refused(s: &mut Setup, a: &HistoryArchive, expect: impl Fn(&HistoryError) -> bool) {
    let (contacts, messages) = (count(&s.new, "contacts"), count(&s.new, "messages"));
    let e = import(s, a).unwrap_err();
    assert!(expect(&e), "{e:?}");
    assert_eq!(
        (count(&s.new, "contacts"), count(&s.new, "messages")),
        (contacts, messages),
        "nothing stored"
    );
}

fn set_digest(a: &mut HistoryArchive, path: &Path) {
    a.digest = file_digest(path).unwrap();
    a.size = std::fs::metadata(path).unwrap().len();
}

#[test]
fn a_tampered_chunk_is_refused_and_nothing_is_stored() {
    let mut s = setup(3000);
    let mut a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    assert!(a.size > (archive::CHUNK_LEN * 2) as u64, "several chunks: {}", a.size);
    let good = std::fs::read(&s.path).unwrap();
    for at in [10, archive::CHUNK_LEN + 100, good.len() - 3] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        std::fs::write(&s.path, &bad).unwrap();
        // The digest catches it first ...
        refused(&mut s, &a, |e| matches!(e, HistoryError::DigestMismatch));
        // ... and the chunk's tag without it (a digest that matches the altered file).
        let good_digest = a.digest;
        set_digest(&mut a, &s.path);
        refused(&mut s, &a, |e| matches!(e, HistoryError::Tampered));
        a.digest = good_digest;
    }
    // Two chunks swapped.
    let mut swapped = good.clone();
    let c = archive::CHUNK_LEN + stream::TAG_LEN;
    let (first, second) = (good[..c].to_vec(), good[c..2 * c].to_vec());
    swapped[..c].copy_from_slice(&second);
    swapped[c..2 * c].copy_from_slice(&first);
    std::fs::write(&s.path, &swapped).unwrap();
    set_digest(&mut a, &s.path);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Tampered));
    // Positive control.
    std::fs::write(&s.path, &good).unwrap();
    set_digest(&mut a, &s.path);
    assert_eq!(import(&mut s, &a).unwrap().messages_added, 3000);
}

#[test]
fn a_truncated_archive_is_refused() {
    let mut s = setup(3000);
    let mut a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    let good = std::fs::read(&s.path).unwrap();
    let c = archive::CHUNK_LEN + stream::TAG_LEN;
    // Cut anywhere: the size says so.
    std::fs::write(&s.path, &good[..good.len() - 1]).unwrap();
    refused(&mut s, &a, |e| matches!(e, HistoryError::SizeMismatch { .. }));
    // Cut at a chunk boundary, with a size and digest to match: the chunk that now comes
    // last was not sealed as the last one.
    for chunks in [1, 2] {
        std::fs::write(&s.path, &good[..chunks * c]).unwrap();
        set_digest(&mut a, &s.path);
        refused(&mut s, &a, |e| matches!(e, HistoryError::Tampered));
    }
    std::fs::write(&s.path, &good).unwrap();
    set_digest(&mut a, &s.path);
    assert_eq!(import(&mut s, &a).unwrap().messages_added, 3000);
}

#[test]
fn the_wrong_key_is_refused() {
    let mut s = setup(100);
    let mut a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    let right = *a.key.expose_secret();
    let mut wrong = right;
    wrong[0] ^= 1;
    a.key = ArchiveKey::from_bytes(wrong);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Tampered));
    a.key = ArchiveKey::from_bytes(right);
    assert_eq!(import(&mut s, &a).unwrap().messages_added, 100);
}

/// A small archive that inflates to far more than declared stops at the bound.
#[test]
fn a_decompression_bomb_stops_at_the_declared_size() {
    let mut s = setup(0);
    // 2,000 messages of 60 KB of one letter: 120 MB inflated, some hundred KB compressed.
    let text = "x".repeat(60_000);
    let tx = s.old.store.tx().unwrap();
    for i in 0..2000u64 {
        put_row(&tx, "bob", 1, false, &text, Some(i as i64), i as i64);
    }
    tx.commit().unwrap();
    let mut a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    assert!(a.plain_size > 100 * a.size, "{} inflates to {}", a.size, a.plain_size);
    let real = a.plain_size;
    // A sender that declares 1 MB: refused once 1 MB is passed, not after 120 MB.
    a.plain_size = 1024 * 1024;
    refused(&mut s, &a, |e| matches!(e, HistoryError::TooLarge(_)));
    // One byte less than the real size is refused too; declaring more than there is, also.
    a.plain_size = real - 1;
    refused(&mut s, &a, |e| matches!(e, HistoryError::TooLarge(_)));
    a.plain_size = real + 1;
    refused(&mut s, &a, |e| matches!(e, HistoryError::Malformed(_)));
    // Over the absolute cap: refused before anything is read.
    a.plain_size = MAX_PLAIN_BYTES + 1;
    refused(&mut s, &a, |e| matches!(e, HistoryError::TooLarge(_)));
    assert!(HistoryArchive::from_bytes(&a.to_bytes()).is_err());
    a.plain_size = real;
    assert_eq!(import(&mut s, &a).unwrap().messages_added, 2000);
}

/// Seals a hand-made record stream (for format tests).
fn seal_stream(path: &Path, plain: &[u8]) -> HistoryArchive {
    use std::io::Write;
    let key = ArchiveKey::generate().unwrap();
    let file = open_private(path, false).unwrap();
    let sealer = SealWriter::new(key.expose_secret(), file);
    let mut deflate = flate2::write::DeflateEncoder::new(sealer, flate2::Compression::new(6));
    deflate.write_all(plain).unwrap();
    let (_, size, digest) = deflate.finish().unwrap().finish().unwrap();
    HistoryArchive { blob_id: [1; 16], key, size, plain_size: plain.len() as u64, digest }
}

fn message(text: &str) -> MessageRecord {
    MessageRecord {
        peer: AccountName::new("bob").unwrap(),
        device: 1,
        outgoing: false,
        text: text.into(),
        server_time_ms: Some(5),
        sent_time_ms: 4,
        message_id: None,
    }
}

fn stream_of(records: impl FnOnce(&mut RecordWriter<&mut Vec<u8>>)) -> Vec<u8> {
    let mut plain = Vec::new();
    let mut w = RecordWriter::new(&mut plain).unwrap();
    records(&mut w);
    w.finish().unwrap();
    plain
}

#[test]
fn the_record_format_skips_what_it_does_not_know_and_refuses_what_it_must() {
    let mut s = setup(0);
    // A record kind from a later format, and a message with a field appended: read past.
    let mut plain = stream_of(|w| w.message(&message("one")).unwrap());
    let end_at = plain.len() - (1 + 4 + 16);
    let mut extended = plain[..end_at].to_vec();
    extended.extend_from_slice(&[9, 0, 0, 0, 3, 1, 2, 3]);
    let mut body = plain[5 + 15 + 5..end_at].to_vec(); // the message record's body
    body.extend_from_slice(b"later field");
    extended.push(2);
    extended.extend_from_slice(&(body.len() as u32).to_be_bytes());
    extended.extend_from_slice(&body);
    // The end record counts two messages now.
    extended.extend_from_slice(&[3, 0, 0, 0, 16]);
    extended.extend_from_slice(&0u64.to_be_bytes());
    extended.extend_from_slice(&2u64.to_be_bytes());
    let a = seal_stream(&s.path, &extended);
    assert_eq!(import(&mut s, &a).unwrap().messages_added, 2);
    assert_eq!(s.new.store.history("bob").unwrap().len(), 2);

    // A newer format version: refused.
    plain[5 + 13..5 + 15].copy_from_slice(&2u16.to_be_bytes());
    let a = seal_stream(&s.path, &plain);
    refused(&mut s, &a, |e| matches!(e, HistoryError::UnknownVersion(2)));
    // No end record: refused (a stream cut inside the plaintext).
    let cut = stream_of(|w| w.message(&message("two")).unwrap());
    let a = seal_stream(&s.path, &cut[..cut.len() - 21]);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Truncated));
    // An end record whose counts do not match.
    let mut wrong = stream_of(|w| w.message(&message("three")).unwrap());
    let n = wrong.len();
    wrong[n - 1] = 7;
    let a = seal_stream(&s.path, &wrong);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Malformed(_)));
    // A name that is not an account name; a text over the bound; invalid UTF-8.
    let good = stream_of(|w| w.message(&message("four")).unwrap());
    let mut bad_name = good.clone();
    bad_name[5 + 15 + 5 + 1] = b'B';
    let a = seal_stream(&s.path, &bad_name);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Malformed("name")));
    let mut bad_utf8 = good.clone();
    let text_at = 5 + 15 + 5 + 1 + 3 + 4 + 1 + 4;
    bad_utf8[text_at] = 0xff;
    let a = seal_stream(&s.path, &bad_utf8);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Malformed("message text")));
    let mut long = good.clone();
    long[text_at - 4..text_at].copy_from_slice(&((crate::MAX_TEXT_BYTES + 1) as u32).to_be_bytes());
    let a = seal_stream(&s.path, &long);
    refused(&mut s, &a, |e| matches!(e, HistoryError::TooLarge("message text")));
    // A contact whose device list is not signed by the key it carries.
    let mut c = contact("dave", false);
    c.account_key = contact("erin", false).account_key;
    let forged = stream_of(|w| w.contact(&c).unwrap());
    let a = seal_stream(&s.path, &forged);
    refused(&mut s, &a, |e| matches!(e, HistoryError::Malformed(_)));
    // Positive control: the unaltered stream imports.
    let a = seal_stream(&s.path, &good);
    assert_eq!(import(&mut s, &a).unwrap().messages_added, 1);
}

/// The server's blob endpoints as the API describes them, in memory, able to stop
/// answering after a number of chunks (a dropped connection, a killed process).
#[derive(Default)]
struct MemoryBlobs {
    blobs: Mutex<HashMap<String, (u64, Vec<u8>)>>,
    /// Chunk requests (puts and gets) answered before every further one fails.
    fail_after: Mutex<Option<usize>>,
    /// Chunk requests that fail once each as a lost connection would (retried in the call).
    flaky: Mutex<u32>,
    chunks: Mutex<usize>,
    /// Bytes that went up and down.
    sent: Mutex<u64>,
    fetched: Mutex<u64>,
}

impl MemoryBlobs {
    fn chunk_allowed(&self) -> Result<(), ClientError> {
        let mut flaky = self.flaky.lock().unwrap();
        if *flaky > 0 {
            *flaky -= 1;
            return Err(ClientError::Network("injected: connection reset".into()));
        }
        let mut n = self.chunks.lock().unwrap();
        if self.fail_after.lock().unwrap().is_some_and(|k| *n >= k) {
            return Err(ClientError::Internal("injected: connection lost"));
        }
        *n += 1;
        Ok(())
    }

    fn status_of(id: &str, size: u64, data: &[u8]) -> api::BlobStatus {
        api::BlobStatus { id: id.into(), size, received: data.len() as u64, expires_in_secs: 3600 }
    }
}

impl BlobTransport for MemoryBlobs {
    async fn create(&self, size: u64) -> Result<api::BlobStatus, ClientError> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).unwrap();
        let id = hex::encode(id);
        self.blobs.lock().unwrap().insert(id.clone(), (size, Vec::new()));
        Ok(Self::status_of(&id, size, &[]))
    }

    async fn status(&self, id: &str) -> Result<api::BlobStatus, ClientError> {
        let blobs = self.blobs.lock().unwrap();
        let (size, data) = blobs.get(id).ok_or_else(|| ClientError::NotFound("blob".into()))?;
        Ok(Self::status_of(id, *size, data))
    }

    async fn put(&self, id: &str, offset: u64, bytes: Vec<u8>) -> Result<api::BlobStatus, ClientError> {
        self.chunk_allowed()?;
        assert!(bytes.len() <= api::limits::MAX_BLOB_CHUNK_BYTES);
        let mut blobs = self.blobs.lock().unwrap();
        let (size, data) = blobs.get_mut(id).ok_or_else(|| ClientError::NotFound("blob".into()))?;
        if offset != data.len() as u64 || offset + bytes.len() as u64 > *size {
            return Err(ClientError::Server { status: 409, code: None, message: "offset".into() });
        }
        *self.sent.lock().unwrap() += bytes.len() as u64;
        data.extend_from_slice(&bytes);
        Ok(Self::status_of(id, *size, data))
    }

    async fn get(&self, id: &str, offset: u64, len: u64) -> Result<Vec<u8>, ClientError> {
        self.chunk_allowed()?;
        assert!(len as usize <= api::limits::MAX_BLOB_CHUNK_BYTES);
        let blobs = self.blobs.lock().unwrap();
        let (size, data) = blobs.get(id).ok_or_else(|| ClientError::NotFound("blob".into()))?;
        assert_eq!(data.len() as u64, *size, "read once complete");
        let out = data[offset as usize..(offset + len).min(*size) as usize].to_vec();
        *self.fetched.lock().unwrap() += out.len() as u64;
        Ok(out)
    }

    async fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.blobs.lock().unwrap().remove(id).map(drop).ok_or_else(|| ClientError::NotFound("blob".into()))
    }
}

/// Leftover transfer files in a home.
fn leftovers(home: &Path) -> Vec<String> {
    std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("history-"))
        .collect()
}

#[tokio::test]
async fn an_interrupted_upload_and_download_resume_where_they_stopped() {
    let mut s = setup(0);
    fill(&mut s.old, &["bob"], 4000, &mut |r| noisy_text(r, 1200));
    let t = MemoryBlobs::default();
    let chunk = api::limits::MAX_BLOB_CHUNK_BYTES as u64;
    let mut seen = Vec::new();

    // The upload stops after 2 chunks; the sealed file and its key wait for the next call.
    *t.fail_after.lock().unwrap() = Some(2);
    let e = export_via(&s.old.store, &t, &mut |d, total| seen.push((d, total))).await.unwrap_err();
    assert!(matches!(e, HistoryError::Client(ClientError::Internal(_))), "{e:?}");
    assert_eq!(*t.sent.lock().unwrap(), 2 * chunk);
    assert_eq!(leftovers(s.old.home()), ["history-export.tmp"]);
    // The next call goes on from the server's offset: nothing is sent twice.
    *t.fail_after.lock().unwrap() = None;
    seen.clear();
    let a = export_via(&s.old.store, &t, &mut |d, total| seen.push((d, total))).await.unwrap();
    assert!(a.size > 3 * chunk, "{}", a.size);
    assert_eq!(*t.sent.lock().unwrap(), a.size, "each byte went up once");
    assert_eq!(seen.first(), Some(&(2 * chunk, a.size)));
    assert_eq!(seen.last(), Some(&(a.size, a.size)));
    assert!(leftovers(s.old.home()).is_empty(), "temp file removed");
    assert!(s.old.store.meta(EXPORT_PENDING).unwrap().is_none());

    // The download stops after 1 chunk; the partial file stays and nothing is imported.
    *t.chunks.lock().unwrap() = 0;
    *t.fail_after.lock().unwrap() = Some(1);
    assert!(import_via(&mut s.new, &t, &a, &mut |_, _| {}).await.is_err());
    assert_eq!(count(&s.new, "messages"), 0);
    assert_eq!(leftovers(s.new.home()).len(), 1);
    *t.fail_after.lock().unwrap() = None;
    seen.clear();
    let summary = import_via(&mut s.new, &t, &a, &mut |d, total| seen.push((d, total))).await.unwrap();
    assert_eq!(summary.messages_added, 4000);
    assert_eq!(*t.fetched.lock().unwrap(), a.size, "each byte came down once");
    assert_eq!(seen.first(), Some(&(chunk, a.size)));
    assert_eq!(all_history(&s.new), all_history(&s.old));
    assert!(leftovers(s.new.home()).is_empty(), "temp file removed");
    assert!(t.blobs.lock().unwrap().is_empty(), "blob deleted after the import");
}

#[tokio::test]
async fn a_failed_import_removes_its_file_and_stores_nothing() {
    let mut s = setup(200);
    let t = MemoryBlobs::default();
    let mut a = export_via(&s.old.store, &t, &mut |_, _| {}).await.unwrap();
    a.digest[0] ^= 1;
    let e = import_via(&mut s.new, &t, &a, &mut |_, _| {}).await.unwrap_err();
    assert!(matches!(e, HistoryError::DigestMismatch), "{e:?}");
    assert_eq!(count(&s.new, "messages"), 0);
    assert!(leftovers(s.new.home()).is_empty());
    assert_eq!(t.blobs.lock().unwrap().len(), 1, "kept: the user may try again");
    a.digest[0] ^= 1;
    assert_eq!(import_via(&mut s.new, &t, &a, &mut |_, _| {}).await.unwrap().messages_added, 200);
}

#[tokio::test]
async fn a_lost_connection_is_retried_within_the_call() {
    let mut s = setup(0);
    fill(&mut s.old, &["bob"], 2000, &mut |r| noisy_text(r, 1200));
    let t = MemoryBlobs::default();
    *t.flaky.lock().unwrap() = 2;
    let a = export_via(&s.old.store, &t, &mut |_, _| {}).await.unwrap();
    assert_eq!(*t.flaky.lock().unwrap(), 0, "the failures happened");
    assert_eq!(*t.sent.lock().unwrap(), a.size);
    *t.flaky.lock().unwrap() = 2;
    assert_eq!(import_via(&mut s.new, &t, &a, &mut |_, _| {}).await.unwrap().messages_added, 2000);
    assert_eq!(*t.fetched.lock().unwrap(), a.size);
}

/// With the payload v2 `message_id` column (added by the messaging part of issue 9), ids
/// travel and find duplicates: a message with a known id is skipped whatever its text.
#[test]
fn message_ids_travel_and_find_duplicates() {
    let mut s = setup(20);
    for c in [&s.old, &s.new] {
        if !has_message_id(c.store.conn()).unwrap() {
            c.store.conn().execute_batch("ALTER TABLE messages ADD COLUMN message_id BLOB").unwrap();
        }
    }
    s.old
        .store
        .conn()
        .execute("UPDATE messages SET message_id = randomblob(16) WHERE id % 2 = 0", [])
        .unwrap();
    let ids = |c: &Client| -> Vec<Option<Vec<u8>>> {
        let mut st = c.store.conn().prepare("SELECT message_id FROM messages ORDER BY id").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    // The new device holds one message with an id, under another text.
    let (peer, outgoing, id): (String, bool, Vec<u8>) = s
        .old
        .store
        .conn()
        .query_row("SELECT peer, outgoing, message_id FROM messages WHERE id = 2", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    s.new
        .store
        .conn()
        .execute(
            "INSERT INTO messages (peer, device, outgoing, text, sent_time_ms, message_id) VALUES (?1, 0, ?2, 'x', 1, ?3)",
            params![peer, outgoing, id],
        )
        .unwrap();
    let a = archive_of(write_archive(s.old.store.conn(), &s.path).unwrap());
    let summary = import(&mut s, &a).unwrap();
    assert_eq!((summary.messages_added, summary.messages_skipped), (19, 1));
    let mut want = ids(&s.old);
    want.remove(1);
    assert_eq!(ids(&s.new)[1..], want[..], "ids carried over");
}

/// The same round trip over the real server's blob endpoints (on both stores).
mod over_the_server {
    use super::common::{Backend, Relay, account};

    use super::*;

    on_both!(round_trip_through_the_server);

    /// alice's device exports through the server; a second store of hers imports it (with
    /// the same device's session: blobs are readable by the devices of the account).
    async fn round_trip_through_the_server(backend: Backend) {
        let relay = Relay::start(backend).await;
        let (ho, hn) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut old = account(&relay, ho.path(), "alice").await;
        fill(&mut old, &["bob", "alice"], 1000, &mut realistic_text);
        let mut progress = Vec::new();
        let a = old.export_history(&mut |d, t| progress.push((d, t))).await.unwrap();
        assert_eq!(progress.last(), Some(&(a.size, a.size)));
        assert!(leftovers(old.home()).is_empty());
        let mut new = Client::offline(hn.path(), "alice").unwrap();
        let summary = import_via(&mut new, &old.api, &a, &mut |_, _| {}).await.unwrap();
        assert_eq!(summary.messages_added, 1000);
        assert_eq!(all_history(&new), all_history(&old));
        assert!(leftovers(new.home()).is_empty());
        let id = blobs::id_hex(&a.blob_id);
        assert!(matches!(old.api.blob_status(&id).await, Err(ClientError::NotFound(_))), "blob deleted");
        // A tampered reference is refused, nothing stored (positive control above).
        let b = old.export_history(&mut |_, _| {}).await.unwrap();
        let mut bad = HistoryArchive::from_bytes(&b.to_bytes()).unwrap();
        bad.key = ArchiveKey::from_bytes([0; 32]);
        let ho2 = tempfile::tempdir().unwrap();
        let mut other = Client::offline(ho2.path(), "alice").unwrap();
        let e = import_via(&mut other, &old.api, &bad, &mut |_, _| {}).await.unwrap_err();
        assert!(matches!(e, HistoryError::Tampered), "{e:?}");
        assert_eq!(count(&other, "messages"), 0);
        old.discard_history(&b).await.unwrap();
        assert!(matches!(
            old.api.blob_status(&blobs::id_hex(&b.blob_id)).await,
            Err(ClientError::NotFound(_))
        ));
        relay.stop().await;
    }
}

/// Peak resident memory of this process so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Resets the peak (Linux: `5` to `/proc/self/clear_refs`), so what follows is measured alone.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Issue 9, "Linking with 100,000 messages of history: under 30 s, RSS bounded": export,
/// upload, download and import of 100,000 chat-like messages through the real server on
/// loopback (SQLite, in this process), with wall times and the peak RSS of the transfer;
/// then deflate alone at several levels on the same record stream.
/// `cargo test -p tacit-client --lib history_transfer_100k -- --ignored --nocapture`;
/// `scripts/bench_history` runs it in the release profile for docs/BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark (about 15 s); run with --ignored --nocapture"]
async fn history_transfer_100k() {
    use std::time::Instant;
    // `HISTORY_BENCH_MESSAGES=N` for another size (to see that the peak RSS does not grow).
    let n_env = std::env::var("HISTORY_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok());
    let n: usize = n_env.unwrap_or(100_000);
    let relay = common::Relay::start(common::Backend::Sqlite).await;
    let (ho, hn) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut old = common::account(&relay, ho.path(), "alice").await;
    let peers = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"];
    fill(&mut old, &peers, n, &mut realistic_text);
    let mut new = Client::offline(hn.path(), "alice").unwrap();
    let text_bytes: i64 = old
        .store
        .conn()
        .query_row("SELECT sum(length(CAST(text AS BLOB))) FROM messages", [], |r| r.get(0))
        .unwrap();
    let base_rss = peak_rss_kib();
    reset_peak_rss();
    let start = Instant::now();
    let a = old.export_history(&mut |_, _| {}).await.unwrap();
    let export_upload = start.elapsed();
    let start = Instant::now();
    let summary = import_via(&mut new, &old.api, &a, &mut |_, _| {}).await.unwrap();
    let download_import = start.elapsed();
    let peak = peak_rss_kib();
    assert_eq!(summary.messages_added, n as u64);
    let total = export_upload + download_import;
    println!("history transfer, {n} messages ({text_bytes} bytes of text, {} record bytes)", a.plain_size);
    println!("  archive {} bytes: ratio {:.2}", a.size, a.plain_size as f64 / a.size as f64);
    println!(
        "  export + upload {:.2} s, download + import {:.2} s, total {:.2} s",
        export_upload.as_secs_f64(),
        download_import.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "  peak RSS during the transfer {} MiB (server and both clients in this process; before: {} MiB)",
        peak / 1024,
        base_rss / 1024
    );
    assert!(total.as_secs() < 30, "{total:?}");
    relay.stop().await;
    let mut figures = serde_json::json!({
        "messages": n,
        "text_bytes": text_bytes,
        "record_bytes": a.plain_size,
        "archive_bytes": a.size,
        "export_upload_secs": export_upload.as_secs_f64(),
        "download_import_secs": download_import.as_secs_f64(),
        "total_secs": total.as_secs_f64(),
        "peak_rss_mib": peak / 1024,
        "rss_before_mib": base_rss / 1024,
        "deflate": [],
    });
    let s = Setup { _dirs: [ho, hn], old, new, path: std::path::PathBuf::new(), contacts: Vec::new() };

    // Deflate alone on the record stream, at three levels.
    let mut plain = Vec::new();
    {
        let mut w = RecordWriter::new(&mut plain).unwrap();
        let mut st = s
            .old
            .store
            .conn()
            .prepare("SELECT peer, device, outgoing, text, server_time_ms, sent_time_ms FROM messages")
            .unwrap();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            w.message(&MessageRecord {
                peer: AccountName::new(&r.get::<_, String>(0).unwrap()).unwrap(),
                device: r.get(1).unwrap(),
                outgoing: r.get(2).unwrap(),
                text: r.get(3).unwrap(),
                server_time_ms: r.get::<_, Option<i64>>(4).unwrap().map(|t| t as u64),
                sent_time_ms: r.get::<_, i64>(5).unwrap() as u64,
                message_id: None,
            })
            .unwrap();
        }
        w.finish().unwrap();
    }
    for level in [1, 2, 3, 4, 6, 9] {
        use std::io::{Read, Write};
        let start = Instant::now();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(&plain).unwrap();
        let packed = e.finish().unwrap();
        let c = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut out = Vec::with_capacity(plain.len());
        flate2::read::DeflateDecoder::new(packed.as_slice()).read_to_end(&mut out).unwrap();
        let d = start.elapsed().as_secs_f64();
        assert_eq!(out, plain);
        let mb = plain.len() as f64 / 1e6;
        if let Some(levels) = figures["deflate"].as_array_mut() {
            levels.push(serde_json::json!({
                "level": level,
                "ratio": plain.len() as f64 / packed.len() as f64,
                "compress_mb_per_sec": mb / c,
                "inflate_mb_per_sec": mb / d,
            }));
        }
        println!(
            "  deflate level {level}: ratio {:.2}, compress {:.0} MB/s, inflate {:.0} MB/s",
            plain.len() as f64 / packed.len() as f64,
            mb / c,
            mb / d
        );
    }
    // `HISTORY_BENCH_JSON=FILE`: the figures for scripts/bench_report.py (scripts/bench_history).
    if let Ok(path) = std::env::var("HISTORY_BENCH_JSON") {
        std::fs::write(path, serde_json::to_vec_pretty(&figures).unwrap()).unwrap();
    }
}
