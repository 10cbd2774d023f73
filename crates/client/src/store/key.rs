//! The store's 32-byte SQLCipher raw key: derived from a passphrase with Argon2id (salt and
//! parameters in `store.salt` beside the database), or random and kept in `store.key`
//! (mode 0600) when the user chose no passphrase.
//!
//! A rekey never leaves the database without a file that opens it: the new secret is
//! written and fsynced first under a new name (`store.salt.new` or `store.key.new`), the
//! database is rekeyed, the new file is renamed over the old one, and the old secret's other
//! file (if the kind changed) is removed last. [`candidates`] lists every secret file that
//! may open the store, oldest first, so `open` tries both after a crash at any step.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::rng::OsRng;
use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// File holding the Argon2id salt and parameters (passphrase mode).
pub(crate) const SALT_FILE: &str = "store.salt";
/// File holding the random raw key (no-passphrase mode), readable only by the user.
pub(crate) const KEY_FILE: &str = "store.key";
/// The salt file of a rekey in progress (written before the database is rekeyed).
pub(crate) const NEW_SALT_FILE: &str = "store.salt.new";
/// The key file of a rekey in progress (written before the database is rekeyed).
pub(crate) const NEW_KEY_FILE: &str = "store.key.new";
/// Permission bits `store.key` may have (owner read and write); any other bit set refuses it.
#[cfg(unix)]
const KEY_FILE_MODE: u32 = 0o600;

/// Argon2id parameters (RFC 9106 §4, second recommended option: 64 MiB, 3 passes, 1 lane).
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;
/// Bounds on parameters read back from `store.salt` (a damaged file must not make us
/// allocate gigabytes).
const MAX_M_KIB: u32 = 1024 * 1024;
const MAX_T: u32 = 16;
const SALT_LEN: usize = 16;

/// How the store is protected.
pub enum StoreSecret {
    /// A passphrase; the key is derived with Argon2id.
    Passphrase(Zeroizing<String>),
    /// No passphrase: a random key in a file only the user can read.
    NoPassphrase,
}

/// The SQLCipher raw key. Never printed; wiped on drop.
pub(crate) struct RawKey(Zeroizing<[u8; 32]>);

impl RawKey {
    fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *k);
        Self(k)
    }

    /// The `PRAGMA key`/`rekey` value: `"x'<hex>'"` (a raw key: SQLCipher skips its own KDF).
    pub(crate) fn pragma_value(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(70));
        s.push_str("\"x'");
        s.push_str(&Zeroizing::new(hex::encode(*self.0)));
        s.push_str("'\"");
        s
    }

    #[cfg(test)]
    pub(crate) fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Argon2id parameters and salt, as stored in `store.salt`.
struct KdfParams {
    m_kib: u32,
    t: u32,
    p: u32,
    salt: [u8; SALT_LEN],
}

impl KdfParams {
    fn fresh() -> Self {
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        Self { m_kib: ARGON2_M_KIB, t: ARGON2_T, p: ARGON2_P, salt }
    }

    fn encode(&self) -> String {
        format!("argon2id v=19 m={} t={} p={} salt={}\n", self.m_kib, self.t, self.p, hex::encode(self.salt))
    }

    fn decode(text: &str) -> Option<Self> {
        let mut it = text.split_whitespace();
        if it.next()? != "argon2id" || it.next()? != "v=19" {
            return None;
        }
        let mut field = |name: &str| it.next()?.strip_prefix(name).map(str::to_owned);
        let m_kib = field("m=")?.parse().ok()?;
        let t = field("t=")?.parse().ok()?;
        let p = field("p=")?.parse().ok()?;
        let salt: [u8; SALT_LEN] = hex::decode(field("salt=")?).ok()?.try_into().ok()?;
        if !(8..=MAX_M_KIB).contains(&m_kib) || !(1..=MAX_T).contains(&t) || p != 1 {
            return None;
        }
        Some(Self { m_kib, t, p, salt })
    }

    fn derive(&self, passphrase: &str) -> Result<RawKey> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| ClientError::Internal("argon2 parameters"))?;
        let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        kdf.hash_password_into(passphrase.as_bytes(), &self.salt, &mut *key)
            .map_err(|_| ClientError::Internal("argon2"))?;
        Ok(RawKey(key))
    }
}

/// A key ready to be committed to disk: the files are written by [`PendingKey::commit`]
/// only after the database accepted the key.
pub(crate) struct PendingKey {
    pub(crate) key: RawKey,
    files: KeyFiles,
}

enum KeyFiles {
    Salt(String),
    KeyFile,
}

fn path(home: &Path, name: &str) -> PathBuf {
    home.join(name)
}

/// Whether the store in `home` needs a passphrase (a salt file and no key file, current or
/// from an interrupted rekey).
pub fn needs_passphrase(home: &Path) -> bool {
    let has = |name: &str| path(home, name).exists();
    !has(KEY_FILE) && !has(NEW_KEY_FILE) && (has(SALT_FILE) || has(NEW_SALT_FILE))
}

/// One file that may hold the store's secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The file's name in the home directory.
    pub(crate) name: &'static str,
    /// Whether it is the file of an interrupted rekey (`*.new`).
    pub(crate) pending: bool,
}

/// The secret files present in `home`, in the order `open` tries them: the current files
/// first (a rekey that did not commit leaves the database under the old key, and SQLite rolls
/// back a hot journal only when opened with that key), then those of an interrupted rekey.
pub(crate) fn candidates(home: &Path) -> Vec<Candidate> {
    [(KEY_FILE, false), (SALT_FILE, false), (NEW_KEY_FILE, true), (NEW_SALT_FILE, true)]
        .into_iter()
        .filter(|(name, _)| path(home, name).exists())
        .map(|(name, pending)| Candidate { name, pending })
        .collect()
}

/// The key held or derived from one secret file (`passphrase` for a salt file).
pub(crate) fn key_from(home: &Path, name: &str, passphrase: Option<&Zeroizing<String>>) -> Result<RawKey> {
    let file = path(home, name);
    if name == KEY_FILE || name == NEW_KEY_FILE {
        check_private(&file)?;
        let text = Zeroizing::new(fs::read_to_string(&file).map_err(|e| ClientError::file(&file, &e))?);
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| ClientError::WrongKey)?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| ClientError::WrongKey)?;
        return Ok(RawKey(Zeroizing::new(arr)));
    }
    let text = fs::read_to_string(&file).map_err(|e| ClientError::file(&file, &e))?;
    let params = KdfParams::decode(&text).ok_or(ClientError::WrongKey)?;
    let passphrase = passphrase.filter(|p| !p.is_empty()).ok_or(ClientError::PassphraseRequired)?;
    params.derive(passphrase)
}

/// Refuses a key file that anyone but its owner may read or write (as ssh does for its keys):
/// the key would no longer be the user's alone.
fn check_private(file: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(file).map_err(|e| ClientError::file(file, &e))?.permissions().mode() & 0o777;
        if mode & !KEY_FILE_MODE != 0 {
            return Err(ClientError::KeyFilePermissions { path: file.to_owned(), mode });
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Derives or reads the key of the existing store in `home` from its current secret file
/// (the key file when both exist).
#[cfg(test)]
pub(crate) fn existing_key(home: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<RawKey> {
    let first = candidates(home).into_iter().find(|c| !c.pending).ok_or(ClientError::NoAccount)?;
    key_from(home, first.name, passphrase)
}

/// A fresh key for `secret` (a new store, or a rekey), not yet on disk.
pub(crate) fn new_key(secret: &StoreSecret) -> Result<PendingKey> {
    match secret {
        StoreSecret::Passphrase(p) if !p.is_empty() => {
            let params = KdfParams::fresh();
            Ok(PendingKey { key: params.derive(p)?, files: KeyFiles::Salt(params.encode()) })
        }
        _ => Ok(PendingKey { key: RawKey::random(), files: KeyFiles::KeyFile }),
    }
}

impl PendingKey {
    /// The file this key is written to while the rekey is in progress.
    fn new_name(&self) -> &'static str {
        match self.files {
            KeyFiles::Salt(_) => NEW_SALT_FILE,
            KeyFiles::KeyFile => NEW_KEY_FILE,
        }
    }

    /// The file this key ends up in, and the other kind's file it makes obsolete.
    fn final_names(&self) -> (&'static str, &'static str) {
        match self.files {
            KeyFiles::Salt(_) => (SALT_FILE, KEY_FILE),
            KeyFiles::KeyFile => (KEY_FILE, SALT_FILE),
        }
    }

    /// Writes the salt or key file under `name` (atomically, fsynced; a key file 0600).
    fn write(&self, home: &Path, name: &str) -> Result<()> {
        match &self.files {
            KeyFiles::Salt(text) => write_atomic(home, name, text.as_bytes(), false),
            KeyFiles::KeyFile => {
                let text = Zeroizing::new(format!("{}\n", Zeroizing::new(hex::encode(*self.key.0)).as_str()));
                write_atomic(home, name, text.as_bytes(), true)
            }
        }
    }

    /// A new store: writes the salt file or the key file and removes the other.
    pub(crate) fn commit(&self, home: &Path) -> Result<()> {
        let (name, other) = self.final_names();
        self.write(home, name)?;
        remove_if_exists(&path(home, other))?;
        sync_dir(home)
    }

    /// Rekey, step 1: the new secret is durable on disk under its `.new` name before the
    /// database changes key (and any leftover of an earlier interrupted rekey is gone).
    pub(crate) fn write_pending(&self, home: &Path) -> Result<()> {
        remove_if_exists(&path(home, NEW_SALT_FILE))?;
        remove_if_exists(&path(home, NEW_KEY_FILE))?;
        self.write(home, self.new_name())
    }

    /// Rekey, step 3 (after the database took the key): the `.new` file replaces the current
    /// one in one rename.
    pub(crate) fn promote(&self, home: &Path) -> Result<()> {
        let target = path(home, self.final_names().0);
        fs::rename(path(home, self.new_name()), &target).map_err(|e| ClientError::file(&target, &e))?;
        sync_dir(home)
    }

    /// Rekey, step 4: the old secret's file of the other kind, if any, goes last.
    pub(crate) fn remove_old(&self, home: &Path) -> Result<()> {
        remove_if_exists(&path(home, self.final_names().1))?;
        sync_dir(home)
    }
}

/// After `open` succeeded with `used`: the database has that file's key, so every other
/// secret file is stale. An interrupted rekey whose `.new` file opened the store is finished
/// (renamed into place); one that never committed loses its leftover.
pub(crate) fn settle(home: &Path, used: Candidate) -> Result<()> {
    let kept = match used.name {
        NEW_KEY_FILE => KEY_FILE,
        NEW_SALT_FILE => SALT_FILE,
        other => other,
    };
    if used.pending {
        let target = path(home, kept);
        fs::rename(path(home, used.name), &target).map_err(|e| ClientError::file(&target, &e))?;
        sync_dir(home)?;
    }
    for name in [KEY_FILE, SALT_FILE, NEW_KEY_FILE, NEW_SALT_FILE] {
        if name != kept {
            remove_if_exists(&path(home, name))?;
        }
    }
    sync_dir(home)
}

pub(crate) fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::file(p, &e)),
    }
}

/// Writes `name` in `dir` through a temporary file, fsync and rename, then fsyncs the
/// directory: after a crash the file is either the old or the new one, whole. A `private`
/// file is 0600 whatever the umask and whatever temporary file was left behind: a leftover
/// is removed and the new one created exclusively, then set to 0600 explicitly.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], private: bool) -> Result<()> {
    // A failure names the file being written (the temporary file is an implementation detail).
    let target = dir.join(name);
    write_atomic_io(dir, name, bytes, private).map_err(|e| match e {
        ClientError::Io(e) => ClientError::file(&target, &e),
        other => other,
    })
}

fn write_atomic_io(dir: &Path, name: &str, bytes: &[u8], private: bool) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    remove_if_exists(&tmp)?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Fsyncs a directory so a rename in it is durable (a no-op where unsupported).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ClientError::file(dir, &e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_bounds() {
        let p = KdfParams::fresh();
        let q = KdfParams::decode(&p.encode()).unwrap();
        assert_eq!((q.m_kib, q.t, q.p, q.salt), (p.m_kib, p.t, p.p, p.salt));
        assert!(KdfParams::decode("argon2id v=19 m=999999999 t=3 p=1 salt=00").is_none());
        assert!(KdfParams::decode("garbage").is_none());
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k = new_key(&StoreSecret::NoPassphrase).unwrap();
        k.commit(dir.path()).unwrap();
        let file = dir.path().join(KEY_FILE);
        for bad in [0o644, 0o640, 0o604, 0o660, 0o602] {
            fs::set_permissions(&file, fs::Permissions::from_mode(bad)).unwrap();
            let err = existing_key(dir.path(), None).err().unwrap();
            assert!(matches!(err, ClientError::KeyFilePermissions { mode, .. } if mode == bad), "{err}");
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(existing_key(dir.path(), None).is_ok(), "read-only by the owner is fine");
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_0600_even_over_a_leftover_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(format!(".{KEY_FILE}.tmp"));
        fs::write(&tmp, b"leftover").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        let k = new_key(&StoreSecret::NoPassphrase).unwrap();
        k.commit(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
        assert!(!tmp.exists());
        // The same for the `.new` file of a rekey.
        let tmp = dir.path().join(format!(".{NEW_KEY_FILE}.tmp"));
        fs::write(&tmp, b"leftover").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        k.write_pending(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join(NEW_KEY_FILE)), 0o600);
    }

    #[test]
    fn key_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let k = new_key(&StoreSecret::NoPassphrase).unwrap();
        k.commit(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = existing_key(dir.path(), None).unwrap();
        assert_eq!(again.expose_secret(), k.key.expose_secret());
    }
}
