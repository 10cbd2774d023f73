//! The archive's plaintext: a versioned stream of typed, length-prefixed records.
//!
//! ```text
//! record  = u8 kind || u32 length (big-endian) || body (length bytes, at most MAX_RECORD_BYTES)
//! kind 0  header:  "tacit history" || u16 format version (1)         (first record, once)
//! kind 1  contact: u8 n || name (n bytes) || account key (32) || u32 m || device list (m bytes)
//!                  || u8 verified (0 or 1)
//! kind 2  message: u8 n || peer (n bytes) || u32 device || u8 flags || u32 m || text (m bytes, UTF-8)
//!                  || u64 sent_time_ms || [u64 server_time_ms if flags & 2]
//!                  || [16-byte message id if flags & 4]                     (flags & 1: outgoing)
//! kind 3  end:     u64 contacts || u64 messages                          (last record, once)
//! ```
//!
//! Extensible both ways: a reader skips records of kinds it does not know and ignores bytes
//! after the fields it knows at the end of a body, so a later format adds fields at the end
//! of a record or new kinds without a version change; a change old readers must not
//! misread raises the version, which they refuse. Every field is bounded on reading
//! (names are valid account names, texts at most [`crate::MAX_TEXT_BYTES`], device lists at
//! most [`MAX_DEVICE_LIST_BYTES`], times within SQLite's integers), and the end record's
//! counts must match what came before it.

use std::io::{Read, Write};

use tacit_protocol::AccountName;

use super::HistoryError;

/// The format this code writes (and the only one it reads).
pub(crate) const FORMAT_VERSION: u16 = 1;
/// The header's magic.
const MAGIC: &[u8] = b"tacit history";
/// The largest record body (a text or a device list, with room for fields added later).
pub(crate) const MAX_RECORD_BYTES: usize = 256 * 1024;
/// The largest device list carried for a contact.
pub(crate) const MAX_DEVICE_LIST_BYTES: usize = 64 * 1024;

const KIND_HEADER: u8 = 0;
const KIND_CONTACT: u8 = 1;
const KIND_MESSAGE: u8 = 2;
const KIND_END: u8 = 3;

const FLAG_OUTGOING: u8 = 1;
const FLAG_SERVER_TIME: u8 = 2;
const FLAG_MESSAGE_ID: u8 = 4;

/// A contact as the approving device holds it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ContactRecord {
    pub(crate) name: AccountName,
    /// The pinned account key.
    pub(crate) account_key: [u8; 32],
    /// The accepted device list, signed by `account_key`.
    pub(crate) device_list: Vec<u8>,
    pub(crate) verified: bool,
}

/// One message of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MessageRecord {
    pub(crate) peer: AccountName,
    pub(crate) device: u32,
    pub(crate) outgoing: bool,
    pub(crate) text: String,
    pub(crate) server_time_ms: Option<u64>,
    pub(crate) sent_time_ms: u64,
    /// The message's 16-byte id (payload v2), when the store has one.
    pub(crate) message_id: Option<[u8; 16]>,
}

/// A decoded record.
pub(crate) enum Record {
    Contact(ContactRecord),
    Message(MessageRecord),
    /// The last record (its counts matched what came before it).
    End,
}

/// Writes records to `out`, counting them for the end record.
pub(crate) struct RecordWriter<W: Write> {
    out: W,
    body: Vec<u8>,
    contacts: u64,
    messages: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts the stream with its header.
    pub(crate) fn new(out: W) -> Result<Self, HistoryError> {
        let mut w = Self { out, body: Vec::with_capacity(1024), contacts: 0, messages: 0 };
        w.body.extend_from_slice(MAGIC);
        w.body.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        w.emit(KIND_HEADER)?;
        Ok(w)
    }

    fn emit(&mut self, kind: u8) -> Result<(), HistoryError> {
        let len = u32::try_from(self.body.len())
            .ok()
            .filter(|&l| l as usize <= MAX_RECORD_BYTES)
            .ok_or(HistoryError::TooLarge("archive record"))?;
        self.out.write_all(&[kind])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(&self.body)?;
        self.body.clear();
        Ok(())
    }

    fn put_name(&mut self, name: &AccountName) {
        let b = name.as_str().as_bytes();
        // An AccountName is at most 32 bytes.
        self.body.push(b.len() as u8);
        self.body.extend_from_slice(b);
    }

    fn put_bytes32(&mut self, b: &[u8]) -> Result<(), HistoryError> {
        let len = u32::try_from(b.len()).map_err(|_| HistoryError::TooLarge("archive field"))?;
        self.body.extend_from_slice(&len.to_be_bytes());
        self.body.extend_from_slice(b);
        Ok(())
    }

    /// Appends a contact.
    pub(crate) fn contact(&mut self, c: &ContactRecord) -> Result<(), HistoryError> {
        if c.device_list.len() > MAX_DEVICE_LIST_BYTES {
            return Err(HistoryError::TooLarge("device list"));
        }
        self.put_name(&c.name);
        self.body.extend_from_slice(&c.account_key);
        self.put_bytes32(&c.device_list)?;
        self.body.push(u8::from(c.verified));
        self.contacts += 1;
        self.emit(KIND_CONTACT)
    }

    /// Appends a message.
    pub(crate) fn message(&mut self, m: &MessageRecord) -> Result<(), HistoryError> {
        if m.text.len() > crate::MAX_TEXT_BYTES {
            return Err(HistoryError::TooLarge("message text"));
        }
        self.put_name(&m.peer);
        self.body.extend_from_slice(&m.device.to_be_bytes());
        let mut flags = 0;
        if m.outgoing {
            flags |= FLAG_OUTGOING;
        }
        if m.server_time_ms.is_some() {
            flags |= FLAG_SERVER_TIME;
        }
        if m.message_id.is_some() {
            flags |= FLAG_MESSAGE_ID;
        }
        self.body.push(flags);
        self.put_bytes32(m.text.as_bytes())?;
        self.body.extend_from_slice(&m.sent_time_ms.to_be_bytes());
        if let Some(t) = m.server_time_ms {
            self.body.extend_from_slice(&t.to_be_bytes());
        }
        if let Some(id) = &m.message_id {
            self.body.extend_from_slice(id);
        }
        self.messages += 1;
        self.emit(KIND_MESSAGE)
    }

    /// Writes the end record and returns the output.
    pub(crate) fn finish(mut self) -> Result<W, HistoryError> {
        let (c, m) = (self.contacts, self.messages);
        self.body.extend_from_slice(&c.to_be_bytes());
        self.body.extend_from_slice(&m.to_be_bytes());
        self.emit(KIND_END)?;
        Ok(self.out)
    }
}

/// A bounds-checked cursor over one record body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HistoryError> {
        if n > self.0.len() {
            return Err(HistoryError::Malformed("record shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], HistoryError> {
        self.take(N)?.try_into().map_err(|_| HistoryError::Malformed("record field"))
    }
    fn u8(&mut self) -> Result<u8, HistoryError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, HistoryError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// A time or count that fits SQLite's signed 64-bit integers.
    fn u63(&mut self) -> Result<u64, HistoryError> {
        let v = u64::from_be_bytes(self.array()?);
        if v > i64::MAX as u64 {
            return Err(HistoryError::Malformed("number out of range"));
        }
        Ok(v)
    }
    fn name(&mut self) -> Result<AccountName, HistoryError> {
        let n = usize::from(self.u8()?);
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| HistoryError::Malformed("name"))?;
        AccountName::new(s).map_err(|_| HistoryError::Malformed("name"))
    }
    fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], HistoryError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(HistoryError::TooLarge(what));
        }
        self.take(n)
    }
}

/// Reads records from a plaintext stream, checking the header first.
pub(crate) struct RecordReader<R: Read> {
    input: R,
    body: Vec<u8>,
    contacts: u64,
    messages: u64,
    ended: bool,
}

impl<R: Read> RecordReader<R> {
    /// Reads and checks the header.
    pub(crate) fn new(input: R) -> Result<Self, HistoryError> {
        let mut r = Self { input, body: Vec::new(), contacts: 0, messages: 0, ended: false };
        match r.raw()? {
            Some(KIND_HEADER) => {}
            _ => return Err(HistoryError::Malformed("no archive header")),
        }
        let mut b = Body(&r.body);
        if b.take(MAGIC.len())? != MAGIC {
            return Err(HistoryError::Malformed("not a history archive"));
        }
        let version = u16::from_be_bytes(b.array()?);
        if version != FORMAT_VERSION {
            return Err(HistoryError::UnknownVersion(version));
        }
        Ok(r)
    }

    /// The next raw record's kind (its body in `self.body`), or `None` at a clean end of input.
    fn raw(&mut self) -> Result<Option<u8>, HistoryError> {
        let mut head = [0u8; 5];
        let mut got = 0;
        while got < head.len() {
            let Some(rest) = head.get_mut(got..) else { break };
            match self.input.read(rest) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(HistoryError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let [kind, l0, l1, l2, l3] = head;
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(HistoryError::TooLarge("archive record"));
        }
        self.body.resize(len, 0);
        self.input.read_exact(&mut self.body).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => HistoryError::Truncated,
            _ => e.into(),
        })?;
        Ok(Some(kind))
    }

    /// The next record; [`Record::End`] is the last one (its counts checked), and reading
    /// past it is an error.
    pub(crate) fn next_record(&mut self) -> Result<Record, HistoryError> {
        loop {
            if self.ended {
                return Err(HistoryError::Malformed("records after the end"));
            }
            let kind = self.raw()?.ok_or(HistoryError::Truncated)?;
            let mut b = Body(&self.body);
            match kind {
                KIND_HEADER => return Err(HistoryError::Malformed("a second header")),
                KIND_CONTACT => {
                    let name = b.name()?;
                    let account_key = b.array::<32>()?;
                    let device_list = b.bytes(MAX_DEVICE_LIST_BYTES, "device list")?.to_vec();
                    let verified = match b.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(HistoryError::Malformed("verified flag")),
                    };
                    self.contacts += 1;
                    return Ok(Record::Contact(ContactRecord { name, account_key, device_list, verified }));
                }
                KIND_MESSAGE => {
                    let peer = b.name()?;
                    let device = b.u32()?;
                    let flags = b.u8()?;
                    if flags & !(FLAG_OUTGOING | FLAG_SERVER_TIME | FLAG_MESSAGE_ID) != 0 {
                        return Err(HistoryError::Malformed("message flags"));
                    }
                    let text = b.bytes(crate::MAX_TEXT_BYTES, "message text")?;
                    let text = String::from_utf8(text.to_vec())
                        .map_err(|_| HistoryError::Malformed("message text"))?;
                    let sent_time_ms = b.u63()?;
                    let server_time_ms = if flags & FLAG_SERVER_TIME != 0 { Some(b.u63()?) } else { None };
                    let message_id = if flags & FLAG_MESSAGE_ID != 0 { Some(b.array::<16>()?) } else { None };
                    self.messages += 1;
                    return Ok(Record::Message(MessageRecord {
                        peer,
                        device,
                        outgoing: flags & FLAG_OUTGOING != 0,
                        text,
                        server_time_ms,
                        sent_time_ms,
                        message_id,
                    }));
                }
                KIND_END => {
                    let contacts = u64::from_be_bytes(b.array()?);
                    let messages = u64::from_be_bytes(b.array()?);
                    if contacts != self.contacts || messages != self.messages {
                        return Err(HistoryError::Malformed("record counts do not match the end record"));
                    }
                    self.ended = true;
                    return Ok(Record::End);
                }
                // A kind added later: skipped (its length is bounded like any record's).
                _ => {}
            }
        }
    }

    /// The input, once the end record has been read.
    pub(crate) fn into_inner(self) -> R {
        self.input
    }
}
