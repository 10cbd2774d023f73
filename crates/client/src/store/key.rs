//! The store's 32-byte SQLCipher raw key: derived from a passphrase with Argon2id (salt and
//! parameters in `store.salt` beside the database), or random and kept in `store.key`
//! (mode 0600) when the user chose no passphrase.

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

/// Whether the store in `home` needs a passphrase (it has a salt file and no key file).
pub fn needs_passphrase(home: &Path) -> bool {
    !path(home, KEY_FILE).exists() && path(home, SALT_FILE).exists()
}

/// Derives or reads the key of the existing store in `home`.
pub(crate) fn existing_key(home: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<RawKey> {
    let key_file = path(home, KEY_FILE);
    if key_file.exists() {
        let text = Zeroizing::new(fs::read_to_string(&key_file)?);
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| ClientError::WrongKey)?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| ClientError::WrongKey)?;
        return Ok(RawKey(Zeroizing::new(arr)));
    }
    let salt_file = path(home, SALT_FILE);
    if !salt_file.exists() {
        return Err(ClientError::NoAccount);
    }
    let params = KdfParams::decode(&fs::read_to_string(&salt_file)?).ok_or(ClientError::WrongKey)?;
    let passphrase = passphrase.ok_or(ClientError::PassphraseRequired)?;
    params.derive(passphrase)
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
    /// Writes the salt file or the key file (atomically, fsynced) and removes the other.
    pub(crate) fn commit(&self, home: &Path) -> Result<()> {
        match &self.files {
            KeyFiles::Salt(text) => {
                write_atomic(home, SALT_FILE, text.as_bytes(), false)?;
                remove_if_exists(&path(home, KEY_FILE))?;
            }
            KeyFiles::KeyFile => {
                let text = Zeroizing::new(format!("{}\n", Zeroizing::new(hex::encode(*self.key.0)).as_str()));
                write_atomic(home, KEY_FILE, text.as_bytes(), true)?;
                remove_if_exists(&path(home, SALT_FILE))?;
            }
        }
        Ok(())
    }
}

pub(crate) fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `name` in `dir` through a temporary file, fsync and rename, then fsyncs the
/// directory: after a crash the file is either the old or the new one, whole.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], private: bool) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Fsyncs a directory so a rename in it is durable (a no-op where unsupported).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
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
