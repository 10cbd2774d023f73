//! The [`Client`]: one account's device, its store and its server connection.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::rng::OsRng;
use tacit_api as api;
use tacit_protocol::{
    AccountIdentity, AccountKey, AccountName, DeviceAddress, DeviceEntry, DeviceId, DeviceIdentity,
    DeviceList, DevicePrekeys, PrekeyError, PrekeyPolicy, PrekeyUpload, UnixTime,
};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::generations::{self, Generations};
use crate::home_lock::{HomeGuard, HomeLock, LockNotice};
use crate::net::{Api, ConnectOptions};
use crate::prekey_mark::{self, PrekeyMark};
use crate::store::key::{self, StoreSecret, remove_if_exists};
use crate::store::{self, DB_FILE, HistoryEntry, Store};

/// Meta keys in the store.
pub(crate) mod meta {
    pub(crate) const NAME: &str = "account_name";
    pub(crate) const DEVICE: &str = "device_id";
    pub(crate) const SERVER: &str = "server";
    /// The account identity's private key: only on a device that holds it (an approver).
    pub(crate) const ACCOUNT_IDENTITY: &str = "account_identity";
    /// The account identity's public key (32 bytes): on every device (devices that hold the
    /// private key derive it from that).
    pub(crate) const ACCOUNT_KEY: &str = "account_key";
    /// A new account identity made for a rotation, kept until the list it signs is published.
    pub(crate) const PENDING_ACCOUNT_IDENTITY: &str = "pending_account_identity";
    /// Set while the other devices are still to be sent an account key update.
    pub(crate) const KEY_UPDATE_PENDING: &str = "account_key_update_pending";
    pub(crate) const DEVICE_IDENTITY: &str = "device_identity";
    pub(crate) const DEVICE_LIST: &str = "device_list";
    pub(crate) const PREKEYS: &str = "prekeys";
    pub(crate) const REGISTERED: &str = "registered";
    pub(crate) const GENERATIONS_FILE: &str = "generations_file";
    pub(crate) const PENDING_UPLOAD: &str = "pending_prekey_upload";
    /// Set once the prekey generation mark file (`prekey_mark::FILE`) has been written.
    pub(crate) const PREKEY_MARK_FILE: &str = "prekey_mark_file";
    /// Contacts still to be sent a session reset after a restored copy was detected
    /// (`crate::restore`), one name a line.
    pub(crate) const PENDING_RESETS: &str = "pending_session_resets";
    /// When each peer was last sent a session reset because one of its messages could not
    /// be decrypted (`name\tms` lines): at most one such reset per peer per hour.
    pub(crate) const HEAL_RESETS: &str = "heal_session_resets";
    /// When a restore from an older copy was last detected (ms, big-endian).
    pub(crate) const RESTORED_AT: &str = "restored_at";
    /// Key transparency: the directory's pinned keys and namespace (`transparency.rs`).
    pub(crate) const KT_PIN: &str = "kt_pin";
    /// Key transparency: the newest signed epoch root seen (`transparency.rs`).
    pub(crate) const KT_LATEST: &str = "kt_latest";
    /// Key transparency: the last check of the own account's history (`transparency.rs`).
    pub(crate) const KT_OWN_CHECKED: &str = "kt_own_checked";
    /// Key transparency: the account key this account was created with, on the device
    /// that created it (its directory history must start with it).
    pub(crate) const KT_FIRST_KEY: &str = "kt_first_key";
    /// Key transparency: forks found by comparing roots with contacts, one a line.
    pub(crate) const KT_FORKS: &str = "kt_forks";
    /// Key transparency: this device's own root for an epoch where a fork was found; it
    /// rides in every text afterwards instead of the newest, so each contact shown the other
    /// root for that epoch finds the fork too (`transparency.rs`).
    pub(crate) const KT_FORK_ROOT: &str = "kt_fork_root";
    /// Key transparency: the own device list's version this device last sent and the
    /// newest signed epoch before it was sent (`version || epoch`, big-endian): the list must
    /// be in the directory two epochs later (`transparency.rs`).
    pub(crate) const KT_LIST_SENT: &str = "kt_list_sent";
    /// Key transparency: the logs this device trusted before and left for a new one
    /// (`tacit kt trust-new-log`), one a line: `retired ms, old key hex, newest epoch seen
    /// in it, new key hex`, tab-separated.
    pub(crate) const KT_RETIRED: &str = "kt_retired";
}

/// Sessions kept per remote device (the newest sends; older ones still decrypt late messages).
pub(crate) const SESSIONS_PER_DEVICE: usize = 5;

/// This device's own identity.
pub(crate) struct Me {
    pub(crate) name: AccountName,
    pub(crate) device: DeviceId,
    /// The account identity key, on a device that holds it (an approver).
    pub(crate) account: Option<AccountIdentity>,
    /// The account identity's public key.
    pub(crate) account_key: AccountKey,
    pub(crate) identity: DeviceIdentity,
}

impl Me {
    pub(crate) fn address(&self) -> DeviceAddress {
        DeviceAddress { account: self.name.clone(), device: self.device }
    }
}

/// One account's device: the encrypted store, the generation marks and the server.
///
/// Calls take `&mut self`; database work is short and runs inline on the calling task.
pub struct Client {
    pub(crate) store: Store,
    pub(crate) gens: Generations,
    /// The prekey set's generation mark (outside the database).
    pub(crate) prekey_mark: PrekeyMark,
    pub(crate) api: Api,
    pub(crate) me: Me,
    pub(crate) warnings: Vec<String>,
    /// Device lists fetched in this receive for envelopes the stored ones could not decrypt
    /// (sender, claimed identity): see `Client::current_device`.
    pub(crate) list_fetches: HashSet<(String, Option<[u8; 32]>)>,
    /// Device lists this client verified, by name with the exact bytes: a stored list is
    /// verified once per process, not at every send (each device's binding signature costs
    /// about 33 µs; `contacts.rs`).
    pub(crate) verified_lists: std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, DeviceList)>>,
    /// Key transparency: the transparency key the user expects (`--kt-key`), and when the
    /// root of each account's last verified lookup was signed (server clock, ms).
    pub(crate) kt: crate::transparency::KtState,
    /// The home folder's lock, held around every read-modify-write of protocol state, so
    /// several processes can use one home (`home_lock.rs`).
    pub(crate) lock: HomeLock,
    /// The store file this client opened (device and inode): another process that removed
    /// the account (`account forget`, `account delete`) leaves this client on a deleted
    /// file, which it must notice rather than go on storing and acknowledging into it.
    pub(crate) db_file: Option<(u64, u64)>,
    /// Whether this device's state was checked against the server's state counter since
    /// signing in (`restore.rs`); until it was, nothing is sent.
    pub(crate) restore_checked: bool,
    /// Set while `own_list` receives to take an account key update (it tries that once).
    pub(crate) own_list_retried: bool,
    /// Groups in which a received proposal (a member leaving) waits for a commit, made at
    /// the end of the receive (`groups.rs`).
    pub(crate) group_proposals: Vec<Vec<u8>>,
    /// Set while the own devices are brought into the groups (`groups.rs`): the receive a
    /// commit makes on the way does not start it again.
    pub(crate) reconciling: bool,
    /// Groups whose envelopes wait on the relay in this receive (`groups.rs`).
    pub(crate) held_groups: Vec<Vec<u8>>,
    /// Set while members' rejoin requests are honoured (`groups.rs`): the receive a commit
    /// makes on the way does not start it again.
    pub(crate) honouring: bool,
    /// Set while [`Client::refresh_groups`] runs (its commits receive, which ends there).
    pub(crate) refreshing: bool,
    /// Groups being rejoined whose unreadable envelope this process warned of already.
    pub(crate) rejoin_warned: Vec<Vec<u8>>,
}

/// The device and inode of `path` (`None` where there is no such notion or no file).
pub(crate) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        path.exists().then_some((0, 0))
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the Unix epoch, for the protocol's schedules.
pub(crate) fn now() -> UnixTime {
    UnixTime(now_ms() / 1000)
}

/// Converts the protocol's public prekeys to the wire request.
pub(crate) fn upload_request(u: &PrekeyUpload) -> api::PrekeyUploadRequest {
    api::PrekeyUploadRequest {
        signed_prekey: u.signed_prekey.as_ref().map(|k| api::Bytes(k.to_bytes())),
        last_resort: u.last_resort.as_ref().map(|k| api::Bytes(k.to_bytes())),
        one_time: u.one_time.iter().map(|k| api::Bytes(k.to_bytes())).collect(),
        kem_one_time: u.kem_one_time.iter().map(|k| api::Bytes(k.to_bytes())).collect(),
        one_time_ids: None,
        kem_one_time_ids: None,
        state_counter: None,
    }
}

/// The keys of a new account whose one device is device 1: what `Client::create_account`
/// stores and registers, and what `RelayClient::register` registers and forgets.
pub(crate) struct NewAccount {
    pub(crate) account: AccountIdentity,
    pub(crate) identity: DeviceIdentity,
    pub(crate) list: DeviceList,
    pub(crate) prekeys: DevicePrekeys,
    /// The public half of `prekeys`, as uploaded with the account.
    pub(crate) upload: api::PrekeyUploadRequest,
}

impl NewAccount {
    /// Generates the account and device identities, signs a device list of device 1, and
    /// makes the prekeys `policy` plans at `now`.
    pub(crate) fn generate(name: &AccountName, policy: &PrekeyPolicy, now: UnixTime) -> Result<Self> {
        let mut rng = OsRng;
        let account = AccountIdentity::generate(&mut rng)?;
        let identity = DeviceIdentity::generate(&mut rng)?;
        let device = DeviceId::new(1).ok_or(ClientError::Internal("device 1"))?;
        let list = DeviceList::sign(
            &account,
            name.clone(),
            1,
            vec![DeviceEntry {
                approver: true,
                added_ms: now_ms(),
                ..DeviceEntry::new(device, identity.public().clone())
            }],
        )
        .map_err(|source| ClientError::DeviceList { name: name.to_string(), source })?;
        let mut prekeys = DevicePrekeys::new();
        let plan = prekeys.plan(now, policy, 0, 0);
        let upload = upload_request(&prekeys.execute(&mut rng, &identity, now, &plan)?);
        Ok(Self { account, identity, list, prekeys, upload })
    }
}

/// `POST /v1/accounts`: registers `name` under `account`'s key with its signed device list
/// and device 1's prekeys.
pub(crate) async fn register_account(
    api: &Api,
    name: &AccountName,
    account: &AccountIdentity,
    device_list: Vec<u8>,
    prekeys: api::PrekeyUploadRequest,
    registration_token: Option<&str>,
) -> Result<()> {
    let req = api::CreateAccountRequest {
        name: name.to_string(),
        account_key: api::Bytes(account.public().as_bytes().to_vec()),
        device_list: api::Bytes(device_list),
        registration_token: registration_token.map(str::to_owned),
        prekeys,
    };
    api.create_account(&req).await.map(drop)
}

fn load_me(store: &Store) -> Result<Me> {
    let get = |k: &str| store.meta(k)?.ok_or(ClientError::NoAccount);
    let name =
        String::from_utf8(get(meta::NAME)?.to_vec()).map_err(|_| ClientError::Internal("stored name"))?;
    let device: [u8; 4] =
        get(meta::DEVICE)?.as_slice().try_into().map_err(|_| ClientError::Internal("stored device id"))?;
    let account = match store.meta(meta::ACCOUNT_IDENTITY)? {
        Some(bytes) => Some(AccountIdentity::from_bytes(&bytes)?),
        None => None,
    };
    let account_key = match (&account, store.meta(meta::ACCOUNT_KEY)?) {
        (Some(a), _) => a.public(),
        (None, Some(k)) => {
            let k: [u8; 32] =
                k.as_slice().try_into().map_err(|_| ClientError::Internal("stored account key"))?;
            AccountKey::from_bytes(k)?
        }
        (None, None) => return Err(ClientError::Internal("stored account key")),
    };
    Ok(Me {
        name: AccountName::new(&name)?,
        device: DeviceId::new(u32::from_be_bytes(device)).ok_or(ClientError::Internal("stored device id"))?,
        account,
        account_key,
        identity: DeviceIdentity::from_bytes(&get(meta::DEVICE_IDENTITY)?)?,
    })
}

/// What the user must be told about a generations file or prekey mark that [`Client`]'s
/// open found damaged and rebuilt (issue 8, point 11).
fn damage_warnings(home: &Path, gens: &Generations, prekey_mark: &PrekeyMark) -> Vec<String> {
    let mut warnings = Vec::new();
    if gens.was_rebuilt() {
        warnings.push(format!(
            "{} was damaged and has been rebuilt: every conversation is treated as possibly restored \
             from an old copy, so the next message to each contact starts a new session (nothing \
             stored was lost)",
            home.join(generations::FILE).display()
        ));
    }
    if prekey_mark.was_damaged() {
        warnings.push(format!(
            "{} was damaged and is treated as lost: this device's prekeys are replaced at the next \
             command that reaches the server",
            home.join(prekey_mark::FILE).display()
        ));
    }
    warnings
}

/// Removes every file of a store in `home`. `store.db` goes last: a wipe interrupted before
/// it leaves a store without its key file, which says to run `tacit account forget` (and that
/// finishes the wipe), never stray marks that a new account would take for its own.
pub(crate) fn wipe(home: &Path) -> Result<()> {
    for f in [
        key::SALT_FILE.to_owned(),
        key::KEY_FILE.to_owned(),
        key::NEW_SALT_FILE.to_owned(),
        key::NEW_KEY_FILE.to_owned(),
        generations::FILE.to_owned(),
        prekey_mark::FILE.to_owned(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
        DB_FILE.to_owned(),
    ] {
        remove_if_exists(&home.join(f))?;
    }
    Ok(())
}

impl Client {
    /// Whether the store in `home` is protected by a passphrase (so the caller must ask).
    pub fn needs_passphrase(home: &Path) -> bool {
        key::needs_passphrase(home)
    }

    /// Whether `home` holds an account (also when that cannot be told, for a folder the user
    /// may not enter: [`Self::open`] then says why).
    pub fn exists(home: &Path) -> bool {
        Store::exists(home)
    }

    /// Opens the account in `home` (`passphrase` when the store has one).
    pub fn open(home: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<Self> {
        Self::open_with(home, passphrase, &ConnectOptions::default())
    }

    /// [`Self::open`], reaching the server as `options` say (extra trusted CAs).
    pub fn open_with(
        home: &Path,
        passphrase: Option<&Zeroizing<String>>,
        options: &ConnectOptions,
    ) -> Result<Self> {
        Self::open_with_notice(home, passphrase, options, None)
    }

    /// [`Self::open_with`], telling `notice` whenever an operation of this client has to wait
    /// for another process using the same home (opening included): the CLI prints it, so a
    /// command that waits says so instead of looking hung.
    pub fn open_with_notice(
        home: &Path,
        passphrase: Option<&Zeroizing<String>>,
        options: &ConnectOptions,
        notice: Option<LockNotice>,
    ) -> Result<Self> {
        if !Store::exists(home) {
            return Err(ClientError::NoAccount);
        }
        let lock = HomeLock::open(home)?;
        lock.set_notice(notice);
        // Opening may finish an interrupted rekey and write marks: under the lock too.
        let _guard = lock.lock_blocking()?;
        let store = Store::open(home, passphrase)?;
        if store.meta(meta::REGISTERED)?.as_deref().map(Vec::as_slice) != Some(&[1]) {
            return Err(ClientError::NoAccount);
        }
        Self::from_store(store, options, lock)
    }

    /// Takes the home folder's lock for a read-modify-write of protocol state (waiting, and
    /// saying so, while another process holds it). What the client keeps in memory between
    /// operations is brought up to date from disk when the lock was not already held.
    pub(crate) async fn lock_state(&mut self) -> Result<HomeGuard> {
        let guard = self.lock.lock().await?;
        if guard.fresh {
            self.refresh_after_lock()?;
        }
        Ok(guard)
    }

    /// [`Self::lock_state`] for the synchronous calls.
    pub(crate) fn lock_state_blocking(&mut self) -> Result<HomeGuard> {
        let guard = self.lock.lock_blocking()?;
        if guard.fresh {
            self.refresh_after_lock()?;
        }
        Ok(guard)
    }

    /// What another process may have changed while the lock was free: the prekey mark, and
    /// whether the account is still here (the same `store.db`).
    fn refresh_after_lock(&mut self) -> Result<()> {
        if file_identity(&self.store.home().join(DB_FILE)) != self.db_file {
            return Err(ClientError::AccountRemoved(self.store.home().to_owned()));
        }
        self.prekey_mark.reload()
    }

    pub(crate) fn from_store(mut store: Store, options: &ConnectOptions, lock: HomeLock) -> Result<Self> {
        let me = load_me(&store)?;
        let server = store.meta(meta::SERVER)?.ok_or(ClientError::NoAccount)?;
        let server =
            String::from_utf8(server.to_vec()).map_err(|_| ClientError::Internal("stored server"))?;
        let expected = store.meta(meta::GENERATIONS_FILE)?.is_some() || store.has_sessions()?;
        let gens = Generations::load(store.home(), expected)?;
        let marked = store.meta(meta::PREKEY_MARK_FILE)?.is_some();
        let mut prekey_mark = PrekeyMark::load(store.home(), marked)?;
        if !marked {
            // A new store, or one from before the mark existed: the mark starts at the
            // stored set (a mark file already there only grows, so an older set is caught).
            if let Some(bytes) = store.meta(meta::PREKEYS)? {
                prekey_mark.raise(DevicePrekeys::from_bytes(&bytes)?.generation())?;
            }
            let tx = store.tx()?;
            store::set_meta(&tx, meta::PREKEY_MARK_FILE, &[1])?;
            tx.commit()?;
        }
        let warnings = damage_warnings(store.home(), &gens, &prekey_mark);
        let store_home = store.home().to_owned();
        Ok(Self {
            store,
            gens,
            prekey_mark,
            api: Api::new(&server, options)?,
            me,
            warnings,
            list_fetches: HashSet::new(),
            verified_lists: std::sync::Mutex::new(std::collections::HashMap::new()),
            kt: crate::transparency::KtState {
                expected_key: options.transparency_key(),
                auditors: options.required_auditors(),
                ..Default::default()
            },
            own_list_retried: false,
            group_proposals: Vec::new(),
            reconciling: false,
            held_groups: Vec::new(),
            honouring: false,
            refreshing: false,
            rejoin_warned: Vec::new(),
            db_file: file_identity(&store_home.join(DB_FILE)),
            lock,
            restore_checked: false,
        })
    }

    /// Loads the prekey set, checked against its generation mark. A set below the mark
    /// (`store.db` put back from an old copy, or the mark file lost) may hold one-time keys
    /// already used and an old replay memory: it is reset (`reset_after_rollback`) and
    /// stored, and the next [`Self::maintain_prekeys`] uploads a complete new set.
    pub(crate) fn load_prekeys(&mut self) -> Result<DevicePrekeys> {
        let bytes = self.store.meta(meta::PREKEYS)?.ok_or(ClientError::Internal("missing prekeys"))?;
        match DevicePrekeys::from_bytes_at_least(&bytes, self.prekey_mark.expected()) {
            Ok(p) => Ok(p),
            Err(PrekeyError::RolledBack { stored, expected }) => {
                let mut p = DevicePrekeys::from_bytes(&bytes)?;
                p.reset_after_rollback(expected);
                self.prekey_mark.raise(p.generation())?;
                let tx = self.store.tx()?;
                store::set_meta(&tx, meta::PREKEYS, &p.to_bytes())?;
                tx.commit()?;
                self.warnings.push(if expected == u64::MAX {
                    format!(
                        "this device's prekeys could not be checked ({} was lost or damaged); they were \
                         replaced, and first messages sent to the old ones are lost",
                        prekey_mark::FILE
                    )
                } else {
                    format!(
                        "this device's prekeys were restored from an old copy of the store (generation \
                         {stored} < {expected}); they were replaced, and first messages sent to the old \
                         ones are lost"
                    )
                });
                Ok(p)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an account on `server` with this device as device 1: generates the account
    /// and device identities, signs the device list, makes prekeys, stores everything
    /// (encrypted with `secret`), then registers. Re-running after a crash resumes with the
    /// same keys.
    pub async fn create_account(
        home: &Path,
        secret: StoreSecret,
        server: &str,
        name: &str,
        registration_token: Option<&str>,
    ) -> Result<Self> {
        Self::create_account_with(home, secret, server, name, registration_token, &ConnectOptions::default())
            .await
    }

    /// [`Self::create_account`], reaching the server as `options` say (extra trusted CAs).
    pub async fn create_account_with(
        home: &Path,
        secret: StoreSecret,
        server: &str,
        name: &str,
        registration_token: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Self> {
        let name = AccountName::new(name)?;
        let api = Api::new(server, options)?;
        // Refused transport: refuse before making keys or a store.
        api.check_transport()?;
        store::create_private_dir(home)?;
        let lock = HomeLock::open(home)?;
        let _guard = lock.lock_blocking()?;
        if Store::exists(home) {
            let pass = match &secret {
                StoreSecret::Passphrase(p) if !p.is_empty() => Some(p),
                _ => None,
            };
            let resumable = match Store::open(home, pass) {
                Ok(s) => {
                    let registered = s.meta(meta::REGISTERED)?.as_deref().map(Vec::as_slice) == Some(&[1]);
                    let same =
                        s.meta(meta::NAME)?.as_deref().map(Vec::as_slice) == Some(name.as_str().as_bytes());
                    if registered {
                        let existing = load_me(&s).map(|m| m.name.to_string()).unwrap_or_default();
                        return Err(ClientError::AccountExists(existing));
                    }
                    same.then_some(s)
                }
                Err(ClientError::WrongKey | ClientError::PassphraseRequired) => {
                    return Err(ClientError::AccountExists("(locked store)".into()));
                }
                Err(e) => return Err(e),
            };
            if let Some(s) = resumable {
                return Self::register(Self::from_store(s, options, lock.clone())?, api, registration_token)
                    .await;
            }
            wipe(home)?;
        }
        let NewAccount { account, identity, list, prekeys, upload } =
            NewAccount::generate(&name, &PrekeyPolicy::default(), now())?;
        let upload = serde_json::to_vec(&upload).map_err(|_| ClientError::Internal("upload"))?;

        let mut store = Store::create(home, &secret)?;
        let tx = store.tx()?;
        store::set_meta(&tx, meta::NAME, name.as_str().as_bytes())?;
        store::set_meta(&tx, meta::DEVICE, &1u32.to_be_bytes())?;
        store::set_meta(&tx, meta::SERVER, api.base().as_bytes())?;
        store::set_meta(&tx, meta::ACCOUNT_IDENTITY, &account.to_bytes())?;
        store::set_meta(&tx, meta::KT_FIRST_KEY, account.public().as_bytes())?;
        store::set_meta(&tx, meta::DEVICE_IDENTITY, &identity.to_bytes())?;
        store::set_meta(&tx, meta::DEVICE_LIST, &list.to_bytes())?;
        store::set_meta(&tx, meta::PREKEYS, &prekeys.to_bytes())?;
        store::set_meta(&tx, meta::PENDING_UPLOAD, &upload)?;
        store::set_meta(&tx, meta::REGISTERED, &[0])?;
        store::set_meta(&tx, meta::GENERATIONS_FILE, &[1])?;
        tx.commit()?;
        let client = Self::from_store(store, options, lock.clone())?;
        client.gens.ensure_file()?;
        Self::register(client, api, registration_token).await
    }

    /// A registered-looking client that never touched a server (for unit tests).
    #[cfg(test)]
    pub(crate) fn offline(home: &Path, name: &str) -> Result<Self> {
        let name = AccountName::new(name)?;
        let NewAccount { account, identity, prekeys, .. } =
            NewAccount::generate(&name, &PrekeyPolicy::default(), now())?;
        let mut store = Store::create(home, &StoreSecret::NoPassphrase)?;
        let tx = store.tx()?;
        store::set_meta(&tx, meta::NAME, name.as_str().as_bytes())?;
        store::set_meta(&tx, meta::DEVICE, &1u32.to_be_bytes())?;
        store::set_meta(&tx, meta::SERVER, b"http://127.0.0.1:9")?;
        store::set_meta(&tx, meta::ACCOUNT_IDENTITY, &account.to_bytes())?;
        store::set_meta(&tx, meta::DEVICE_IDENTITY, &identity.to_bytes())?;
        store::set_meta(&tx, meta::PREKEYS, &prekeys.to_bytes())?;
        store::set_meta(&tx, meta::REGISTERED, &[1])?;
        store::set_meta(&tx, meta::GENERATIONS_FILE, &[1])?;
        tx.commit()?;
        let client = Self::from_store(store, &ConnectOptions::default(), HomeLock::open(home)?)?;
        client.gens.ensure_file()?;
        Ok(client)
    }

    async fn register(mut self, api: Api, registration_token: Option<&str>) -> Result<Self> {
        self.api = api;
        let get = |k: &str| self.store.meta(k)?.ok_or(ClientError::Internal("missing registration data"));
        let device_list = get(meta::DEVICE_LIST)?.to_vec();
        let prekeys: api::PrekeyUploadRequest = serde_json::from_slice(&get(meta::PENDING_UPLOAD)?)
            .map_err(|_| ClientError::Internal("upload"))?;
        let account =
            self.me.account.clone().ok_or(ClientError::Internal("registration without account key"))?;
        // First contact: pin the server's key transparency keys (refused, with no account
        // made, when they are not the ones given out of band).
        if let Err(e) = self.kt_pin().await {
            if matches!(e, ClientError::Transparency(_)) {
                let home = self.store.home().to_owned();
                self.store.close()?;
                wipe(&home)?;
            }
            return Err(e);
        }
        let sent_list = device_list.clone();
        match register_account(&self.api, &self.me.name, &account, device_list, prekeys, registration_token)
            .await
        {
            Ok(_) => {}
            Err(ClientError::Server { code: Some(api::ErrorCode::NameTaken), .. })
                if self.registered_earlier().await.unwrap_or(false) => {}
            Err(e @ ClientError::Server { .. }) => {
                // Refused for good (name taken, bad name, closed): leave no half-made store.
                let home = self.store.home().to_owned();
                self.store.close()?;
                wipe(&home)?;
                // Said with the name and the token (issue 8, point 8).
                return Err(match e {
                    ClientError::Server { code: Some(api::ErrorCode::NameTaken), .. } => {
                        ClientError::NameTaken(self.me.name.to_string())
                    }
                    ClientError::Server { code: Some(api::ErrorCode::RegistrationClosed), .. } => {
                        ClientError::RegistrationToken { given: registration_token.is_some() }
                    }
                    e => e,
                });
            }
            Err(e) => return Err(e),
        }
        self.kt_note_list_sent(&sent_list).await;
        let tx = self.store.tx()?;
        store::set_meta(&tx, meta::REGISTERED, &[1])?;
        store::delete_meta(&tx, meta::PENDING_UPLOAD)?;
        store::set_meta(&tx, meta::SERVER, self.api.base().as_bytes())?;
        tx.commit()?;
        // Signs in once, which uploads the KeyPackages others need to add this device to a
        // group before it ever runs another command. The account exists either way.
        if let Err(e) = self.online().await {
            self.warnings.push(format!("the account is made, but signing in afterwards failed: {e}"));
        }
        Ok(self)
    }

    /// After a crash between registering and recording it: the server's list is ours.
    async fn registered_earlier(&self) -> Result<bool> {
        let bytes = self.api.device_list(self.me.name.as_str()).await?;
        let list = DeviceList::verify(&bytes, &self.me.name, Some(&self.me.account_key), None);
        Ok(list.is_ok())
    }

    /// The account name.
    pub fn account_name(&self) -> &str {
        self.me.name.as_str()
    }

    /// This device's id.
    pub fn device_id(&self) -> u32 {
        self.me.device.get()
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        self.api.base()
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        self.store.home()
    }

    /// Warnings gathered since the last call (identity changes accepted, stale sessions
    /// replaced, envelopes dropped): for the user's eyes.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Authenticates if needed, then brings the server's prekeys up to date.
    pub(crate) async fn online(&mut self) -> Result<()> {
        if self.api.is_authenticated() && self.restore_checked {
            return Ok(());
        }
        if self.api.is_authenticated() {
            // Signed in, but the restore check did not finish (it failed, or the call was
            // cancelled): sign in again for the server's counter and check before anything
            // is sent on sessions that may be an old copy's.
            self.api.forget_token();
        }
        let identity = &self.me.identity;
        let signed_in = self
            .api
            .authenticate(self.me.name.as_str(), self.me.device.get(), |m| {
                Ok(identity.sign_auth_message(m)?.as_bytes().to_vec())
            })
            .await;
        let state_counter = match signed_in {
            // The server knows no such account or device: say what that means here and what
            // can be done (issue 8, point 12).
            Err(ClientError::NotFound(_)) => {
                return Err(ClientError::UnknownToServer {
                    name: self.me.name.to_string(),
                    server: self.api.base().to_owned(),
                });
            }
            other => other?,
        };
        // A copy of this folder older than what the server saw: start over (`restore.rs`).
        // Under the home's lock: it rewrites every session and the prekey set.
        {
            let _guard = self.lock_state().await?;
            self.check_restored(state_counter)?;
            self.restore_checked = true;
        }
        self.maintain_prekeys().await?;
        // KeyPackages for groups: a server without groups (older) is no reason to stop.
        if let Err(e) = self.maintain_key_packages().await {
            self.warnings.push(format!("could not upload KeyPackages for groups: {e}"));
        }
        // Groups this device lost its state of: members are asked to take it back in.
        self.queue_rejoin_requests()?;
        self.send_pending_resets().await?;
        // A rotation whose account key update did not reach the other devices yet.
        if let Err(e) = self.send_key_update_if_pending().await {
            self.warnings.push(format!("your other devices could not be told the new account key yet: {e}"));
        }
        Ok(())
    }

    /// Refills one-time prekeys and rotates the signed and last-resort prekeys as
    /// `DevicePrekeys::plan` decides from the server's counts. The new private keys and the
    /// pending upload commit together before the upload, so a crash re-sends the upload.
    pub async fn maintain_prekeys(&mut self) -> Result<()> {
        let _guard = self.lock_state().await?;
        if let Some(pending) = self.store.meta(meta::PENDING_UPLOAD)? {
            let req: api::PrekeyUploadRequest =
                serde_json::from_slice(&pending).map_err(|_| ClientError::Internal("upload"))?;
            self.upload(&req).await?;
        }
        let status = self.api.prekey_status().await?;
        let mut prekeys = self.load_prekeys()?;
        // The server cannot hold more usable one-time keys than this device has private
        // halves for (more means it keeps keys from before a reset): refill as if those
        // were gone; the upload replaces them.
        let (one_time, kem_one_time) = prekeys.one_time_counts();
        let held = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let plan = prekeys.plan(
            now(),
            &PrekeyPolicy::default(),
            status.one_time.min(held(one_time)),
            status.kem_one_time.min(held(kem_one_time)),
        );
        if plan.is_empty() {
            return Ok(());
        }
        let upload = prekeys.execute(&mut OsRng, &self.me.identity, now(), &plan)?;
        let req = upload_request(&upload);
        let json = serde_json::to_vec(&req).map_err(|_| ClientError::Internal("upload"))?;
        self.prekey_mark.raise(prekeys.generation())?;
        let tx = self.store.tx()?;
        store::set_meta(&tx, meta::PREKEYS, &prekeys.to_bytes())?;
        store::set_meta(&tx, meta::PENDING_UPLOAD, &json)?;
        store::raise_state_counter(&tx)?;
        tx.commit()?;
        self.upload(&req).await
    }

    async fn upload(&mut self, req: &api::PrekeyUploadRequest) -> Result<()> {
        let empty = req.signed_prekey.is_none()
            && req.last_resort.is_none()
            && req.one_time.is_empty()
            && req.kem_one_time.is_empty();
        if !empty {
            // Every part names the whole one-time set this device holds private halves for
            // now (not when the upload was planned: a pending upload re-sent after a reset
            // must not keep keys that are gone), so the server replaces its set with it.
            let (one_time_ids, kem_one_time_ids) = self.load_prekeys()?.one_time_ids();
            let state_counter = self.reported_state_counter()?;
            // The server takes at most MAX_PREKEYS_PER_UPLOAD of each kind per request.
            let max = api::limits::MAX_PREKEYS_PER_UPLOAD;
            let mut first = true;
            let mut ot = req.one_time.chunks(max);
            let mut kem = req.kem_one_time.chunks(max);
            loop {
                let (a, b) = (ot.next(), kem.next());
                if a.is_none() && b.is_none() && !first {
                    break;
                }
                let part = api::PrekeyUploadRequest {
                    signed_prekey: if first { req.signed_prekey.clone() } else { None },
                    last_resort: if first { req.last_resort.clone() } else { None },
                    one_time: a.map(<[_]>::to_vec).unwrap_or_default(),
                    kem_one_time: b.map(<[_]>::to_vec).unwrap_or_default(),
                    one_time_ids: Some(one_time_ids.clone()),
                    kem_one_time_ids: Some(kem_one_time_ids.clone()),
                    state_counter,
                };
                first = false;
                self.api.upload_prekeys(&part).await?;
            }
        }
        let tx = self.store.tx()?;
        store::delete_meta(&tx, meta::PENDING_UPLOAD)?;
        tx.commit()?;
        Ok(())
    }

    /// The conversation with `name`, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>> {
        let name = AccountName::new(name)?;
        let h = self.store.history(name.as_str())?;
        if h.is_empty() && self.store.contact(name.as_str())?.is_none() {
            return Err(ClientError::UnknownContact(name.to_string()));
        }
        Ok(h)
    }

    /// The notices about `name` (its devices added and removed), oldest first, as
    /// (time in ms since the Unix epoch, text): shown in its history.
    pub fn notices(&self, name: &str) -> Result<Vec<(u64, String)>> {
        let name = AccountName::new(name)?;
        store::notices(self.store.conn(), name.as_str())
    }

    /// Re-encrypts the store under a new passphrase (or a key file for no passphrase).
    pub fn rekey(&mut self, secret: StoreSecret) -> Result<()> {
        let _guard = self.lock_state_blocking()?;
        self.store.rekey(&secret)
    }

    /// The name of the account whose store is in `home` (registered or not), opening the
    /// store with `passphrase` when it has one: what [`Self::forget`] would remove.
    pub fn local_account_name(home: &Path, passphrase: Option<&Zeroizing<String>>) -> Result<String> {
        // Opening may settle the key files of a rekey: never beside one in progress.
        let lock = HomeLock::open(home)?;
        let _guard = lock.lock_blocking()?;
        let store = Store::open(home, passphrase)?;
        let name = store.meta(meta::NAME)?.ok_or(ClientError::NoAccount)?;
        String::from_utf8(name.to_vec()).map_err(|_| ClientError::Internal("stored name"))
    }

    /// Removes the account in `home` from this device only (every file [`Self::delete_account`]
    /// removes), without asking the server: the way out when the server no longer knows the
    /// account (its data was reset) or the store cannot be opened (its key file is lost). The
    /// account stays on the server if it is there; its name stays taken. The caller confirms
    /// with the user first. [`ClientError::NoAccount`] when there is no store here.
    pub fn forget(home: &Path) -> Result<()> {
        if !Store::exists(home) {
            return Err(ClientError::NoAccount);
        }
        // Not under another process's feet (a send in progress on this home).
        let lock = HomeLock::open(home)?;
        let _guard = lock.lock_blocking()?;
        wipe(home)?;
        key::sync_dir(home)
    }

    /// Deletes the account on the server, then every local file of it.
    pub async fn delete_account(mut self) -> Result<()> {
        self.online().await?;
        let _guard = self.lock_state().await?;
        self.api.delete_account(self.me.name.as_str()).await?;
        let home: PathBuf = self.store.home().to_owned();
        self.store.close()?;
        wipe(&home)
    }
}
