//! The SDK's one error type, and the coarse kind each error belongs to (the CLI maps kinds
//! to exit codes).

use std::path::Path;

use tacit_api::ErrorCode;
use tacit_protocol::{CryptoError, DecodeError, DeviceListError, NameError, PrekeyError, SessionError};
use thiserror::Error;

/// What went wrong, coarsely: decides the CLI's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller asked for something malformed (bad name, text too long, missing passphrase).
    Usage,
    /// The network or the server failed or refused.
    Network,
    /// A security check failed: identity changed, verification failed, forged data.
    Security,
    /// No such account, contact or store.
    NotFound,
    /// Local failure (disk, store, internal).
    Local,
}

/// Why an SDK call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The account name is not 3 to 32 of `a-z 0-9 . _ -`.
    #[error("invalid account name: {0}")]
    BadName(#[from] NameError),
    /// The message text is longer than a message can carry.
    #[error("message too long ({len} bytes, at most {max})")]
    MessageTooLong {
        /// The text's length in bytes.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// This device lost its state of the group (its data was restored from an older copy, or
    /// it missed a change) and asked the other members to take it back in: it sends nothing
    /// in the group until one of them has.
    #[error(
        "this device is being re-added to group {group} (its state of the group is out of date: its data \
         was restored from an older copy, or it missed a change); members were asked to take it back in, \
         which happens when one of them is online. Run `tacit receive` later and send again"
    )]
    GroupRejoining {
        /// The group's name.
        group: String,
    },
    /// The store is protected by a passphrase and none was given.
    #[error("the store is protected by a passphrase: set TACIT_PASSPHRASE or run interactively")]
    PassphraseRequired,
    /// The store's key is wrong (wrong passphrase, damaged key file) or the file is not a store.
    #[error("cannot open the store: wrong passphrase or not a Tacit store")]
    WrongKey,
    /// `store.key` may be read or written by others than its owner: refused until the user
    /// makes it private again.
    #[error("{} has mode {mode:o}; it must be readable by you alone: chmod 600 it", path.display())]
    KeyFilePermissions {
        /// The key file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A send addressed to the sender's own account: until linked devices exist there is no
    /// other device of it to reach (issue 8, point 4).
    #[error(
        "{0} is your own account: there is no other device of it to send to yet (send to a contact's name)"
    )]
    SendToSelf(String),
    /// Another process removed the account from this home (`account forget`, `account
    /// delete`) while this one had it open: nothing more is stored or acknowledged here.
    #[error("the account in {} was removed by another tacit process; nothing more was stored", .0.display())]
    AccountRemoved(std::path::PathBuf),
    /// There is no account in this home directory.
    #[error("no account here: run `tacit account create` first")]
    NoAccount,
    /// `store.db` is here but neither `store.salt` nor `store.key` (nor the `.new` file of an
    /// interrupted rekey): the store cannot be opened, and creating an account over it would
    /// destroy it (issue 8, point 11).
    #[error(
        "the store's key file (store.salt or store.key) is missing from {}: restore it from your \
         backup, or run `tacit account forget` to remove this device's account and start over",
        home.display()
    )]
    KeyFileMissing {
        /// The home folder.
        home: std::path::PathBuf,
    },
    /// A file of the store could not be opened, read or written: permissions, a read-only or
    /// full disk, something else in its place. Not a wrong passphrase (issue 8, point 10).
    #[error("{}: {cause} ({hint})", path.display())]
    StoreFile {
        /// The file (or folder) concerned.
        path: std::path::PathBuf,
        /// What the operating system or SQLite said.
        cause: String,
        /// What the user can do.
        hint: &'static str,
    },
    /// The server does not know this device's account: it was deleted from elsewhere, or the
    /// server's data was reset (issue 8, point 12).
    #[error(
        "the server {server} does not know the account {name} (deleted, or the server's data was \
         reset): run `tacit account forget` to remove it from this device, then `tacit account \
         create` to register again"
    )]
    UnknownToServer {
        /// This device's account.
        name: String,
        /// The server's URL.
        server: String,
    },
    /// An account already exists in this home directory.
    #[error(
        "an account ({0}) already exists here (to remove it from this device only, say when the \
         server no longer knows it: `tacit account forget`)"
    )]
    AccountExists(String),
    /// The server says the name, account or device does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A device label longer than 64 bytes or with control characters.
    #[error("a device label is at most 64 bytes, without control characters")]
    BadLabel,
    /// Only a device that holds the account key can approve or revoke other devices.
    #[error(
        "this device does not hold the account key: approve or revoke devices from one that does (`tacit device list` shows them as approver); this device can only revoke itself"
    )]
    NotApprover,
    /// The last device holding the account key cannot be revoked.
    #[error(
        "that is the last device holding the account key: approve another device with --approver before revoking it"
    )]
    LastApprover,
    /// Not a link code (mistyped).
    #[error(
        "that is not a valid link code (a typo? it is 28 letters and digits in 7 groups of 4, as `tacit \
         device link` shows it)"
    )]
    BadLinkCode,
    /// No device waits with this code.
    #[error(
        "no device is waiting with that code: check it, or it expired (a code lives 10 minutes); run `tacit device link` again on the new device"
    )]
    LinkUnknown,
    /// The code was already used.
    #[error("that link code was already used: run `tacit device link` again on the new device for a new one")]
    LinkUsed,
    /// The offer expired before a device approved it.
    #[error("the link code expired before a device approved it: run `tacit device link` again")]
    LinkExpired,
    /// A link offer or answer failed its checks: the code does not match (mistyped), or the
    /// server altered what it relayed.
    #[error(
        "linking refused: {0} (a mistyped code, or the server altered the exchange); nothing was changed"
    )]
    Link(#[from] tacit_protocol::LinkError),
    /// The user declined.
    #[error("cancelled; nothing was changed")]
    Cancelled,
    /// An account key update that failed its checks (nothing stored).
    #[error("refused an account key update from your device {device}: {why}; nothing was changed")]
    KeyUpdateRefused {
        /// The device it came from.
        device: u32,
        /// Why.
        why: String,
    },
    /// The history transfer failed (the device is linked; run `tacit device link` again to
    /// retry the import).
    #[error("history transfer: {0}")]
    History(Box<crate::history_transfer::HistoryError>),
    /// No conversation or contact with this name.
    #[error("unknown contact {0}")]
    UnknownContact(String),
    /// A group operation refused (by MLS or by a member's device list).
    #[error("group: {0}")]
    Group(Box<tacit_groups::GroupError>),
    /// A certificate given to trust (`ConnectOptions`) is not usable.
    #[error("bad CA certificate: {0}")]
    BadCertificate(String),
    /// Plain `http://` to a host that is not this machine, without the caller's consent
    /// ([`crate::ConnectOptions::allow_remote_plain_http`]): the bearer token and metadata
    /// would cross the network readable and alterable.
    #[error(
        "refusing plain http:// to {0}: anyone on the path can read and alter the traffic, \
         including the session token. Use https://, or pass --insecure-http if you accept that"
    )]
    InsecureHttp(String),
    /// The server asked us to sign an authentication message for another origin than the
    /// server we dialled (a relayed challenge, or a misconfigured `origin`).
    #[error(
        "the server at {dialled} asked to sign in for {signed}: refused (is its `origin` setting right?)"
    )]
    WrongOrigin {
        /// The origin of the URL we dialled.
        dialled: String,
        /// The origin the server sent.
        signed: String,
    },
    /// The server URL is not `http(s)://host[:port]` (another scheme, a path, query or
    /// fragment, credentials): refused before anything is made or sent.
    #[error("bad server URL: {0}")]
    BadServerUrl(String),
    /// The auditors required (`--require-auditor`, `--auditor-threshold`) cannot be met:
    /// a key that is not one, or a threshold of none or more than the keys given.
    #[error("{0}")]
    BadAuditors(String),
    /// Account creation: the name is registered already on this server.
    #[error("the name {0} is taken on this server: choose another")]
    NameTaken(String),
    /// Account creation: the server wants a registration token and none was given
    /// (`given: false`), or the one given is wrong.
    #[error("{}", registration_refusal(.given))]
    RegistrationToken {
        /// Whether a token was sent.
        given: bool,
    },
    /// The request did not reach the server or the answer was unreadable.
    #[error("network: {0}")]
    Network(String),
    /// The server refused the request (said as a sentence per [`ErrorCode`], issue 8 point 8).
    #[error("{}", refusal(.status, .code, .message))]
    Server {
        /// HTTP status.
        status: u16,
        /// The stable error code, when the server sent one.
        code: Option<ErrorCode>,
        /// The server's short message.
        message: String,
    },
    /// A verified contact's account key changed: nothing is sent to or accepted from it until
    /// the user compares safety numbers again.
    #[error(
        "{0}'s identity key changed since you verified it. Nothing is sent to or accepted from {0} \
         until you compare safety numbers again (`tacit safety-number {0}`, in person or by a \
         trusted channel) and run `tacit verify {0} DIGITS`"
    )]
    IdentityChanged(String),
    /// The server's key transparency data failed a check: a proof that does not verify, a
    /// root not signed by the pinned key, an older epoch than one seen (rollback), another
    /// root for an epoch seen (a fork). Nothing was encrypted to the keys it came with.
    #[error("{0}")]
    Transparency(TransparencyError),
    /// An envelope claims a sender device that is not in the sender's signed device list.
    #[error("{name} has no device {device} in its signed device list")]
    UnknownDevice {
        /// The account.
        name: String,
        /// The claimed device.
        device: u32,
    },
    /// A delivery receipt names messages never sent to its sender (nothing was stored for
    /// them).
    #[error(
        "refused a delivery receipt from {name} device {device}: {count} of its message ids name no \
         message sent to {name}; nothing was stored for them"
    )]
    UnknownMessage {
        /// The receipt's sender.
        name: String,
        /// Its device.
        device: u32,
        /// How many ids were unknown.
        count: usize,
    },
    /// A retry request names no message this device sent to the requesting device and still
    /// keeps (never sent to it, forgotten, or resent too often already): nothing was sent.
    #[error(
        "refused a request from {name} device {device} to send again the message the server took at \
         {server_time_ms} ms: {}; nothing was sent",
        if *.resent { "it was sent again too often already" } else { "no such message was sent to that device, or it is no longer kept" }
    )]
    RetryRefused {
        /// The requesting account.
        name: String,
        /// Its device.
        device: u32,
        /// The server time of the envelope it could not decrypt (its claim).
        server_time_ms: u64,
        /// The entry exists but was resent the most times already.
        resent: bool,
    },
    /// The typed safety number does not match.
    #[error("safety number mismatch for {0}: do not trust this contact until the numbers match")]
    VerificationFailed(String),
    /// The server handed out a device list that does not verify.
    #[error("device list of {name} refused: {source}")]
    DeviceList {
        /// The account.
        name: String,
        /// Why.
        source: DeviceListError,
    },
    /// A session operation failed.
    #[error("session: {0}")]
    Session(#[from] SessionError),
    /// Bytes from the server or the store did not decode.
    #[error("malformed data: {0}")]
    Decode(#[from] DecodeError),
    /// A primitive failed.
    #[error("cryptography: {0}")]
    Crypto(#[from] CryptoError),
    /// A prekey operation failed.
    #[error("prekeys: {0}")]
    Prekey(#[from] PrekeyError),
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// A file operation failed.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// An internal invariant failed; please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ClientError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::BadName(_)
            | Self::MessageTooLong { .. }
            | Self::PassphraseRequired
            | Self::AccountExists(_)
            | Self::BadCertificate(_)
            | Self::InsecureHttp(_)
            | Self::SendToSelf(_)
            | Self::BadLabel
            | Self::BadLinkCode
            | Self::NotApprover
            | Self::LastApprover
            | Self::Cancelled
            | Self::BadServerUrl(_)
            | Self::BadAuditors(_) => ErrorKind::Usage,
            // A group name or avatar the user gave that is not one (the docs' "invalid name").
            Self::Group(g) if matches!(g.as_ref(), tacit_groups::GroupError::Meta(_)) => ErrorKind::Usage,
            Self::WrongKey | Self::KeyFilePermissions { .. } => ErrorKind::Security,
            Self::NoAccount
            | Self::AccountRemoved(_)
            | Self::NotFound(_)
            | Self::UnknownContact(_)
            | Self::LinkUnknown
            | Self::LinkExpired
            | Self::UnknownToServer { .. } => ErrorKind::NotFound,
            Self::Network(_)
            | Self::Server { .. }
            | Self::NameTaken(_)
            | Self::RegistrationToken { .. }
            | Self::GroupRejoining { .. } => ErrorKind::Network,
            Self::IdentityChanged(_)
            | Self::Transparency(_)
            | Self::VerificationFailed(_)
            | Self::UnknownDevice { .. }
            | Self::UnknownMessage { .. }
            | Self::RetryRefused { .. }
            | Self::DeviceList { .. }
            | Self::Session(_)
            | Self::Decode(_)
            | Self::Crypto(_)
            | Self::Prekey(_)
            | Self::Link(_)
            | Self::KeyUpdateRefused { .. }
            | Self::History(_)
            | Self::Group(_)
            | Self::LinkUsed
            | Self::WrongOrigin { .. } => ErrorKind::Security,
            Self::Store(_)
            | Self::Io(_)
            | Self::Internal(_)
            | Self::KeyFileMissing { .. }
            | Self::StoreFile { .. } => ErrorKind::Local,
        }
    }

    /// A failed file operation on `path`, named in the message with what the user can do.
    pub(crate) fn file(path: &Path, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let hint = match e.kind() {
            K::StorageFull | K::QuotaExceeded => HINT_FULL,
            K::PermissionDenied | K::ReadOnlyFilesystem => HINT_ACCESS,
            K::IsADirectory | K::NotADirectory | K::NotFound | K::AlreadyExists => HINT_IN_PLACE,
            _ => HINT_DISK,
        };
        Self::StoreFile { path: path.to_owned(), cause: e.to_string(), hint }
    }

    /// A [`Self::Store`] failure of the store in `home` that is a disk or permission problem
    /// (a full disk at a commit), as [`Self::StoreFile`] naming its `store.db`; any other
    /// error unchanged. For callers that report errors of a command run on `home`.
    pub fn in_home(self, home: &Path) -> Self {
        match self {
            Self::Store(e) => Self::db(&home.join(crate::store::DB_FILE), e),
            other => other,
        }
    }

    /// A failure of the database `path`: a disk or permission problem names the file
    /// ([`Self::StoreFile`]); anything else stays a store error.
    pub(crate) fn db(path: &Path, e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let hint = match e.sqlite_error_code() {
            Some(C::DiskFull) => HINT_FULL,
            Some(C::ReadOnly | C::PermissionDenied | C::CannotOpen) => HINT_ACCESS,
            Some(C::SystemIoFailure) => HINT_DISK,
            _ => return Self::Store(e),
        };
        Self::StoreFile { path: path.to_owned(), cause: e.to_string(), hint }
    }
}

/// A server's refusal as a sentence: what happened and what the user can do, by the stable
/// code (the server's own message only where it carries the detail, and for a code this
/// version does not know).
fn refusal(status: &u16, code: &Option<ErrorCode>, message: &str) -> String {
    let detail = printable(message);
    match *code {
        Some(ErrorCode::BadRequest) => format!("the server refused the request as malformed: {detail}"),
        Some(ErrorCode::TooLarge) => format!("the request is larger than the server accepts: {detail}"),
        Some(ErrorCode::Unauthorized) => {
            "the server did not accept this device's session (expired or revoked); try again".into()
        }
        Some(ErrorCode::BadAuthentication) => {
            "the server could not authenticate this device (its challenge expired or the signature \
             did not verify); try again"
                .into()
        }
        Some(ErrorCode::RegistrationClosed) => {
            "the server refused to create the account: it needs its registration token \
             (--registration-token or TACIT_REGISTRATION_TOKEN)"
                .into()
        }
        Some(ErrorCode::NameTaken) => "the name is taken on this server: choose another".into(),
        Some(ErrorCode::BadName) => {
            "the server refused the account name: names are 3 to 32 of a-z 0-9 . _ -".into()
        }
        Some(ErrorCode::NotFound) => "no such account or device on the server".into(),
        Some(ErrorCode::MismatchedDevices) => {
            "the recipient's devices changed while sending, on every attempt: the message was not \
             delivered; try again"
                .into()
        }
        Some(ErrorCode::StaleDevices) => {
            "a device of the recipient was set up again while sending: the message was not \
             delivered; try again"
                .into()
        }
        Some(ErrorCode::MailboxFull) => {
            "the recipient's mailbox on the server is full: nothing more can be delivered until \
             they receive their messages"
                .into()
        }
        Some(ErrorCode::StorageFull) => {
            "the server is low on storage and takes no new messages for now; try again later".into()
        }
        Some(ErrorCode::RateLimited) => {
            "too many requests: the server is rate limiting; try again later".into()
        }
        Some(ErrorCode::NoPrekeys) => {
            "the recipient's device has no prekeys left on the server; try again later".into()
        }
        Some(ErrorCode::ClientTooOld) => "this version of tacit is too old for the server: upgrade it".into(),
        Some(ErrorCode::Unavailable) => {
            "the server is unavailable (shutting down or overloaded); try again later".into()
        }
        Some(ErrorCode::Internal) => "the server failed (the cause is in its log); try again later".into(),
        Some(ErrorCode::DeviceListConflict) => {
            "the server refused the new device list (another device changed it first); run the command again"
                .into()
        }
        Some(ErrorCode::AlreadyUsed) => {
            "that link code or upload was already used; start again with a new `tacit device link`".into()
        }
        Some(ErrorCode::StaleEpoch) => {
            "the group changed meanwhile (another member's change came first); receive, then run the command again"
                .into()
        }
        Some(_) | None => format!("the server refused the request (HTTP {status}): {detail}"),
    }
}

/// A refused registration: a wrong token, or none where one is required.
fn registration_refusal(given: &bool) -> &'static str {
    if *given {
        "the registration token is wrong: this server did not accept it"
    } else {
        "this server requires a registration token: pass --registration-token or set TACIT_REGISTRATION_TOKEN"
    }
}

/// A server's text with control characters escaped (it is printed on the user's terminal).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { format!("\\u{{{:x}}}", u32::from(c)) } else { c.to_string() })
        .collect()
}

/// What to do about a full disk.
const HINT_FULL: &str = "the disk is full: free some space and run the command again";
/// What to do about a file that may not be read or written.
const HINT_ACCESS: &str =
    "check that this folder and its files are yours and writable, and that the disk is not read-only";
/// What to do about something else where a file of the store should be.
const HINT_IN_PLACE: &str = "something else is where this file of the store should be";
/// What to do about an input/output error.
const HINT_DISK: &str = "a disk error: check that the disk is not full or failing";

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        // Without the URL: it may carry nothing secret, but keeps messages short. With the
        // causes: "error sending request" alone hides, say, a refused certificate.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = c.source();
        }
        Self::Network(message)
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::Network(e.to_string())
    }
}

/// Shorthand.
pub type Result<T, E = ClientError> = core::result::Result<T, E>;

impl From<crate::history_transfer::HistoryError> for ClientError {
    fn from(e: crate::history_transfer::HistoryError) -> Self {
        match e {
            crate::history_transfer::HistoryError::Client(c) => c,
            e => Self::History(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8, point 8: every code reads as a sentence, never as a Rust value.
    #[test]
    fn server_refusals_are_sentences() {
        let codes = [
            ErrorCode::BadRequest,
            ErrorCode::TooLarge,
            ErrorCode::Unauthorized,
            ErrorCode::BadAuthentication,
            ErrorCode::RegistrationClosed,
            ErrorCode::NameTaken,
            ErrorCode::BadName,
            ErrorCode::NotFound,
            ErrorCode::MismatchedDevices,
            ErrorCode::StaleDevices,
            ErrorCode::MailboxFull,
            ErrorCode::StorageFull,
            ErrorCode::RateLimited,
            ErrorCode::NoPrekeys,
            ErrorCode::ClientTooOld,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::DeviceListConflict,
            ErrorCode::AlreadyUsed,
            ErrorCode::StaleEpoch,
        ];
        let mut seen = std::collections::HashSet::new();
        for code in codes.into_iter().map(Some).chain([None]) {
            let e = ClientError::Server { status: 409, code, message: "devices changed (extra [1])".into() };
            let text = e.to_string();
            assert!(!text.contains("Some(") && !text.contains("None") && !text.contains("{"), "{text}");
            assert!(seen.insert(text.clone()), "one sentence per code: {text}");
        }
        let e =
            ClientError::Server { status: 507, code: Some(ErrorCode::MailboxFull), message: String::new() };
        assert!(e.to_string().contains("mailbox on the server is full"), "{e}");
        let e = ClientError::Server { status: 418, code: None, message: "odd\x1b[2J".into() };
        assert_eq!(e.to_string(), "the server refused the request (HTTP 418): odd\\u{1b}[2J");
        assert!(ClientError::NameTaken("alice".into()).to_string().contains("the name alice is taken"));
        assert!(ClientError::RegistrationToken { given: true }.to_string().contains("is wrong"));
        assert!(ClientError::RegistrationToken { given: false }.to_string().contains("requires"));
    }

    fn sqlite(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    /// Disk and permission failures name the file and are local (exit 1); "not a database"
    /// and the rest stay store errors (issue 8, point 10).
    #[test]
    fn disk_failures_of_the_database_name_the_file() {
        let home = Path::new("/h");
        for (code, hint) in [
            (rusqlite::ffi::SQLITE_FULL, HINT_FULL),
            (rusqlite::ffi::SQLITE_READONLY, HINT_ACCESS),
            (rusqlite::ffi::SQLITE_CANTOPEN, HINT_ACCESS),
            (rusqlite::ffi::SQLITE_PERM, HINT_ACCESS),
            (rusqlite::ffi::SQLITE_IOERR_WRITE, HINT_DISK),
        ] {
            let e = ClientError::Store(sqlite(code)).in_home(home);
            assert!(
                matches!(&e, ClientError::StoreFile { path, hint: h, .. }
                if path == Path::new("/h/store.db") && *h == hint),
                "{code}: {e}"
            );
            assert!(e.to_string().starts_with("/h/store.db: "), "{e}");
            assert_eq!(e.kind(), ErrorKind::Local);
        }
        for code in
            [rusqlite::ffi::SQLITE_NOTADB, rusqlite::ffi::SQLITE_CONSTRAINT, rusqlite::ffi::SQLITE_BUSY]
        {
            assert!(
                matches!(ClientError::Store(sqlite(code)).in_home(home), ClientError::Store(_)),
                "{code}"
            );
        }
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = ClientError::file(Path::new("/h/generations"), &full);
        assert!(e.to_string().starts_with("/h/generations: ") && e.to_string().contains(HINT_FULL), "{e}");
    }
}

/// Which key transparency check failed: each behaviour of a lying server has a name of its
/// own (`docs/THREAT_MODEL.md` lists where each is found, and after how long).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KtViolation {
    /// A root not signed by the pinned transparency key, signed for another log, or a key
    /// other than the one pinned or given out of band.
    WrongKey,
    /// An epoch older than the newest this device has seen.
    Rollback,
    /// Two different roots for one epoch, both signed by the log's key.
    Fork,
    /// A lookup or history proof that does not verify against its signed root (a value
    /// substituted, a version left out or rewritten).
    BadProof,
    /// A proof for another account's label.
    WrongAccount,
    /// A root without the cosignatures of enough of the auditors this device requires.
    NotCosigned,
    /// An account the server has but its directory does not publish.
    Unpublished,
    /// Transparency data that does not decode.
    Malformed,
    /// An auditor found the log not append-only (or its epochs unsigned or rewritten).
    Audit,
}

impl KtViolation {
    /// The violation's stable name (in messages and `--json` output).
    pub fn name(self) -> &'static str {
        match self {
            Self::WrongKey => "wrong-key",
            Self::Rollback => "rollback",
            Self::Fork => "fork",
            Self::BadProof => "bad-proof",
            Self::WrongAccount => "wrong-account",
            Self::NotCosigned => "not-cosigned",
            Self::Unpublished => "unpublished",
            Self::Malformed => "malformed",
            Self::Audit => "audit",
        }
    }
}

/// A key transparency check that failed: which one, and what the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransparencyError {
    /// The check.
    pub violation: KtViolation,
    /// What failed, in a sentence.
    pub detail: String,
}

impl std::fmt::Display for TransparencyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key transparency ({}): {}", self.violation.name(), self.detail)
    }
}

impl ClientError {
    /// A failed key transparency check.
    pub(crate) fn kt(violation: KtViolation, detail: impl Into<String>) -> Self {
        Self::Transparency(TransparencyError { violation, detail: detail.into() })
    }

    /// The key transparency check that failed, if this is one.
    pub fn kt_violation(&self) -> Option<KtViolation> {
        match self {
            Self::Transparency(e) => Some(e.violation),
            _ => None,
        }
    }
}

impl From<(tacit_transparency::KtError, &str)> for ClientError {
    /// A check of `tacit-transparency` about `what` (an account name, a root).
    fn from((e, what): (tacit_transparency::KtError, &str)) -> Self {
        use tacit_transparency::KtError as E;
        let violation = match &e {
            E::BadRootSignature | E::WrongNamespace(_) => KtViolation::WrongKey,
            E::BadProof(_) => KtViolation::BadProof,
            E::WrongAccount => KtViolation::WrongAccount,
            _ => KtViolation::Malformed,
        };
        Self::kt(violation, if what.is_empty() { e.to_string() } else { format!("{what}: {e}") })
    }
}
