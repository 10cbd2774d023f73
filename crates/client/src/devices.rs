//! The account's devices: linking a new device, approving it from a device that holds the
//! account key, listing and revoking devices (issue 9).
//!
//! **Who holds the account key.** The first device does; a linked device only when it was
//! approved with `--approver`. Only such a device (an *approver*) signs device lists, so only
//! it can add or revoke devices. A device that holds no account key can still log itself out.
//!
//! **Linking** (`docs/PROTOCOL.md`, "Linking a device"): the new device makes its identity,
//! its first prekeys and a 128-bit link secret, publishes an offer MACed under the secret and
//! shows the secret as a code. The approver reads the code, checks the offer's MAC (a server
//! that swapped keys fails it), shows the label and fingerprint, publishes a new signed list
//! with the device and its prekeys (so it is reachable from that moment), then seals the
//! provisioning message to the offer's ephemeral keys and the secret. The server relays
//! ciphertext only.
//!
//! **Revoking** publishes a list without the device; revoking an approver rotates the account
//! key (contacts see an identity change), and the last approver cannot be revoked.

use std::path::Path;
use std::time::Duration;

use tacit_api as api;
use tacit_protocol::{
    AccountIdentity, AccountKey, AccountName, DeviceEntry, DeviceId, DeviceIdentity, DeviceList,
    DevicePrekeys, HistoryRef, LinkSecret, PendingLink, PrekeyPolicy, Provisioning, VerifiedOffer,
    valid_device_label,
};
use zeroize::Zeroizing;

use crate::client::{Client, meta, now, now_ms, upload_request, wipe};
use crate::error::{ClientError, Result};
use crate::history_transfer::{ArchiveKey, HistoryArchive, HistoryError};
use crate::home_lock::HomeLock;
use crate::messaging::{OutboxMode, Outgoing};
use crate::net::{Api, ConnectOptions};
use crate::payload::{AccountSecret, Payload};
use crate::rng::OsRng;
use crate::store::key::StoreSecret;
use crate::store::{self, ContactRow, Store};

/// An offer with less time left than this is refused by `device approve`: publishing, the
/// history upload and the answer must fit in what is left.
const MIN_OFFER_SECS_LEFT: u64 = 60;

/// Most pages of key rotations a device follows at once ([`Client::follow_rotations`]):
/// 64 × 16 = 1,024 rotations, each a revoked approver.
const MAX_ROTATION_PAGES: usize = 64;

/// Meta keys of a device that is waiting to be linked.
mod link_meta {
    /// The pending link (ephemeral secrets; `PendingLink::to_bytes`).
    pub(crate) const PENDING: &str = "link_pending";
    /// The code shown to the user.
    pub(crate) const CODE: &str = "link_code";
    /// When the offer expires on the server (ms, big-endian).
    pub(crate) const EXPIRES: &str = "link_expires";
    /// A history archive still to be imported (`HistoryRef::to_bytes`).
    pub(crate) const HISTORY: &str = "link_history";
}

/// One device of the account, as `tacit device list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id.
    pub id: u32,
    /// Its label.
    pub label: String,
    /// When it was added (ms since the Unix epoch; 0 when the list does not say).
    pub added_ms: u64,
    /// When the server last saw it (ms), if ever.
    pub last_seen_ms: Option<u64>,
    /// It is this device.
    pub current: bool,
    /// It holds the account key.
    pub approver: bool,
}

/// What `device link` reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Show this code (and its QR code) to the user; the approver types or scans it, and
    /// checks that it shows the same fingerprint.
    Code {
        /// The link code.
        code: String,
        /// This device's identity fingerprint (the approver shows the one it received).
        fingerprint: String,
    },
    /// Linked into `account` as device `device`.
    Linked {
        /// The account.
        account: String,
        /// This device's id.
        device: u32,
        /// Whether this device holds the account key.
        approver: bool,
    },
    /// History transfer progress (bytes done, bytes in all).
    History(u64, u64),
    /// History imported: this many messages.
    HistoryDone(u64),
    /// The approver sent a history and this device declined it (`history: false`): the
    /// upload was deleted, nothing imported.
    HistoryDeclined,
    /// The history could not be imported for good (altered, cut short, gone from the server,
    /// a newer format): the device is linked without it; the reason is given.
    HistoryFailed(String),
}

/// What the approving device is asked to confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// The label the new device gave itself.
    pub label: String,
    /// Its identity fingerprint, as the new device shows it.
    pub fingerprint: String,
}

/// How `device approve` adds the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApproveOptions {
    /// The new device also holds the account key.
    pub approver: bool,
    /// Send the history.
    pub history: bool,
}

impl Client {
    /// Whether this device holds the account key.
    pub fn is_approver(&self) -> bool {
        self.me.account.is_some()
    }

    /// Links a new device in `home` into an existing account: makes this device's keys,
    /// publishes an offer on `server`, tells `events` the code to show, and waits (up to the
    /// offer's lifetime) for an approving device's answer. Re-running on a home that is still
    /// waiting resumes the same offer (same code); on a home whose history import was
    /// interrupted, resumes the import. `history: false` declines a history the approver
    /// sends (and drops one still waiting to be imported).
    pub async fn link_device(
        home: &Path,
        secret: StoreSecret,
        server: &str,
        label: &str,
        history: bool,
        options: &ConnectOptions,
        events: &mut (dyn FnMut(LinkEvent) + Send),
    ) -> Result<Self> {
        if !valid_device_label(label) {
            return Err(ClientError::BadLabel);
        }
        let api = Api::new(server, options)?;
        api.check_transport()?;
        store::create_private_dir(home)?;
        let lock = HomeLock::open(home)?;
        let pass = match &secret {
            StoreSecret::Passphrase(p) if !p.is_empty() => Some(p.clone()),
            _ => None,
        };
        let store = {
            let _guard = lock.lock_blocking()?;
            let mut resumed = None;
            if Store::exists(home) {
                let s = Store::open(home, pass.as_ref())?;
                if s.meta(meta::REGISTERED)?.as_deref().map(Vec::as_slice) == Some(&[1]) {
                    if s.meta(link_meta::HISTORY)?.is_some() {
                        drop(s);
                        let mut client = Client::open_with(home, pass.as_ref(), options)?;
                        client.finish_history_import(history, events).await?;
                        return Ok(client);
                    }
                    let name = s.meta(meta::NAME)?.map(|n| String::from_utf8_lossy(&n).into_owned());
                    return Err(ClientError::AccountExists(name.unwrap_or_default()));
                }
                let live = s
                    .meta(link_meta::EXPIRES)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .is_some_and(|b| u64::from_be_bytes(b) > now_ms() + 5_000);
                let same_server =
                    s.meta(meta::SERVER)?.as_deref().map(Vec::as_slice) == Some(api.base().as_bytes());
                if live && same_server && s.meta(link_meta::PENDING)?.is_some() {
                    resumed = Some(s);
                } else {
                    drop(s);
                    wipe(home)?;
                }
            }
            match resumed {
                Some(s) => s,
                None => Self::new_link_store(home, &secret, &api, label).await?,
            }
        };
        let pending = PendingLink::from_bytes(
            &store.meta(link_meta::PENDING)?.ok_or(ClientError::Internal("pending link"))?,
        )?;
        let code = String::from_utf8(
            store.meta(link_meta::CODE)?.ok_or(ClientError::Internal("link code"))?.to_vec(),
        )
        .map_err(|_| ClientError::Internal("link code"))?;
        let expires = store
            .meta(link_meta::EXPIRES)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let slot = pending.slot_id();
        let identity = DeviceIdentity::from_bytes(
            &store.meta(meta::DEVICE_IDENTITY)?.ok_or(ClientError::Internal("device identity"))?,
        )?;
        events(LinkEvent::Code { code, fingerprint: tacit_protocol::device_fingerprint(identity.public()) });
        let answer = loop {
            let left = expires.saturating_sub(now_ms()) / 1000;
            if left == 0 {
                drop(store);
                let _guard = lock.lock_blocking()?;
                wipe(home)?;
                return Err(ClientError::LinkExpired);
            }
            let wait = left.min(api::limits::MAX_LINK_WAIT_SECS);
            match api.link_answer_wait(&slot, wait).await {
                Ok(Some(a)) => break a.answer.0,
                Ok(None) => {}
                // The server restarted or is briefly away: keep waiting until the offer expires.
                Err(ClientError::Network(_)) => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(ClientError::NotFound(_)) => {
                    drop(store);
                    let _guard = lock.lock_blocking()?;
                    wipe(home)?;
                    return Err(ClientError::LinkExpired);
                }
                Err(e) => return Err(e),
            }
        };
        let provisioning = pending.open_answer(&answer)?;
        let _guard = lock.lock_blocking()?;
        let mut store = store;
        let linked = Self::store_provisioning(&mut store, &provisioning)?;
        let mut client = Client::from_store(store, options, lock.clone())?;
        client.api = api;
        drop(_guard);
        events(LinkEvent::Linked {
            account: linked.0.to_string(),
            device: linked.1.get(),
            approver: client.is_approver(),
        });
        // Signs in (the server knows this device since the approver published it) and
        // uploads the one-time prekeys made with the offer.
        client.online().await?;
        let _ = client.api.link_delete(&slot).await;
        client.finish_history_import(history, events).await?;
        Ok(client)
    }

    /// Makes the new device's keys and store and publishes its offer.
    async fn new_link_store(home: &Path, secret: &StoreSecret, api: &Api, label: &str) -> Result<Store> {
        let mut rng = OsRng;
        let identity = DeviceIdentity::generate(&mut rng)?;
        let mut prekeys = DevicePrekeys::new();
        let plan = prekeys.plan(now(), &PrekeyPolicy::default(), 0, 0);
        let made = prekeys.execute(&mut rng, &identity, now(), &plan)?;
        let signed = made.signed_prekey.clone().ok_or(ClientError::Internal("signed prekey"))?;
        let last_resort = made.last_resort.clone().ok_or(ClientError::Internal("last-resort prekey"))?;
        // The signed and last-resort prekeys travel in the offer (the approver publishes them
        // with the list); the one-time keys are uploaded once this device is in the list.
        let mut one_time = upload_request(&made);
        one_time.signed_prekey = None;
        one_time.last_resort = None;
        let one_time = serde_json::to_vec(&one_time).map_err(|_| ClientError::Internal("upload"))?;
        let link_secret = LinkSecret::generate(&mut rng);
        let (pending, offer) =
            PendingLink::new(&mut rng, &link_secret, identity.public(), label, &signed, &last_resort)?;
        let code = link_secret.to_code();
        let answer = api
            .link_offer_post(&api::LinkOfferRequest {
                slot: api::Bytes(pending.slot_id().to_vec()),
                offer: api::Bytes(offer),
            })
            .await?;
        let expires = now_ms().saturating_add(answer.expires_in_secs.saturating_mul(1000));
        let mut store = Store::create(home, secret)?;
        let tx = store.tx()?;
        store::set_meta(&tx, meta::SERVER, api.base().as_bytes())?;
        store::set_meta(&tx, meta::DEVICE_IDENTITY, &identity.to_bytes())?;
        store::set_meta(&tx, meta::PREKEYS, &prekeys.to_bytes())?;
        store::set_meta(&tx, meta::PENDING_UPLOAD, &one_time)?;
        store::set_meta(&tx, meta::REGISTERED, &[0])?;
        store::set_meta(&tx, meta::GENERATIONS_FILE, &[1])?;
        store::set_meta(&tx, link_meta::PENDING, &pending.to_bytes())?;
        store::set_meta(&tx, link_meta::CODE, code.as_bytes())?;
        store::set_meta(&tx, link_meta::EXPIRES, &expires.to_be_bytes())?;
        tx.commit()?;
        Ok(store)
    }

    /// Stores what the approver sent: the account, this device's id, the signed list (this
    /// account's own contact row, pinned and verified: a later key change of the own account
    /// is accepted only from an own device), the account key if given.
    fn store_provisioning(store: &mut Store, p: &Provisioning) -> Result<(AccountName, DeviceId)> {
        let list = DeviceList::verify(&p.device_list, &p.account, None, None)
            .map_err(|source| ClientError::DeviceList { name: p.account.to_string(), source })?;
        let tx = store.tx()?;
        store::set_meta(&tx, meta::NAME, p.account.as_str().as_bytes())?;
        store::set_meta(&tx, meta::DEVICE, &p.device_id.get().to_be_bytes())?;
        store::set_meta(&tx, meta::ACCOUNT_KEY, list.account_key().as_bytes())?;
        if let Some(account) = &p.account_identity {
            store::set_meta(&tx, meta::ACCOUNT_IDENTITY, &account.to_bytes())?;
        }
        store::set_meta(&tx, meta::DEVICE_LIST, &p.device_list)?;
        let row = ContactRow {
            account_key: *list.account_key().as_bytes(),
            device_list: p.device_list.clone(),
            verified: true,
            pending: None,
        };
        store::put_contact(&tx, p.account.as_str(), &row)?;
        if let Some(h) = &p.history {
            store::set_meta(&tx, link_meta::HISTORY, &archive_of(h).to_bytes())?;
        }
        store::set_meta(&tx, meta::REGISTERED, &[1])?;
        for k in [link_meta::PENDING, link_meta::CODE, link_meta::EXPIRES] {
            store::delete_meta(&tx, k)?;
        }
        tx.commit()?;
        Ok((p.account.clone(), p.device_id))
    }

    /// Imports (or, with `history: false`, declines) the history the approver announced, if
    /// one is still to be imported (resumable: the download continues where it stopped).
    /// A failure that a re-run can get past (the network, the server away, the disk) is
    /// returned and the import stays waiting: re-running `device link` resumes it. One that
    /// no re-run can (the archive altered or cut short, deleted from the server, a newer
    /// format) drops it: the device is linked, without that history, and says why.
    async fn finish_history_import(
        &mut self,
        history: bool,
        events: &mut (dyn FnMut(LinkEvent) + Send),
    ) -> Result<()> {
        let Some(bytes) = self.store.meta(link_meta::HISTORY)? else { return Ok(()) };
        let archive = HistoryArchive::from_bytes(&bytes)?;
        if !history {
            if let Err(e) = self.discard_history(&archive).await {
                self.warnings.push(format!(
                    "the declined history could not be deleted from the server ({e}); it expires within a day"
                ));
            }
            self.forget_history_import()?;
            events(LinkEvent::HistoryDeclined);
            return Ok(());
        }
        match self.import_history(&archive, &mut |done, all| events(LinkEvent::History(done, all))).await {
            Ok(summary) => {
                self.forget_history_import()?;
                events(LinkEvent::HistoryDone(summary.messages_added));
                Ok(())
            }
            Err(e) if history_failure_is_final(&e) => {
                let _ = self.discard_history(&archive).await;
                self.forget_history_import()?;
                events(LinkEvent::HistoryFailed(e.to_string()));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn forget_history_import(&mut self) -> Result<()> {
        let tx = self.store.tx()?;
        store::delete_meta(&tx, link_meta::HISTORY)?;
        tx.commit()?;
        Ok(())
    }

    /// Reads a link code and the waiting device's offer: what the user must confirm.
    pub async fn link_offer(&mut self, code: &str) -> Result<(LinkSecret, VerifiedOffer)> {
        self.link_offer_lifetime(code).await.map(|(s, o, _)| (s, o))
    }

    /// [`Self::link_offer`], with the seconds the offer has left.
    async fn link_offer_lifetime(&mut self, code: &str) -> Result<(LinkSecret, VerifiedOffer, u64)> {
        if self.me.account.is_none() {
            return Err(ClientError::NotApprover);
        }
        let secret = LinkSecret::from_code(code).map_err(|_| ClientError::BadLinkCode)?;
        let offer = match self.api.link_offer_get(&secret.slot_id()).await {
            Ok(o) => o,
            Err(ClientError::NotFound(_)) => return Err(ClientError::LinkUnknown),
            Err(ClientError::Server { code: Some(api::ErrorCode::AlreadyUsed), .. }) => {
                return Err(ClientError::LinkUsed);
            }
            Err(e) => return Err(e),
        };
        let left = offer.expires_in_secs;
        let offer = VerifiedOffer::open(&secret, offer.offer.as_slice())?;
        Ok((secret, offer, left))
    }

    /// Approves the device waiting with `code`: `confirm` is shown its label and fingerprint
    /// and says whether to go on. Publishes the new signed list (with the device's prekeys),
    /// then sends it the sealed provisioning message (and the history, if asked).
    pub async fn approve_device(
        &mut self,
        code: &str,
        options: ApproveOptions,
        confirm: &mut (dyn FnMut(&NewDevice) -> bool + Send),
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<DeviceInfo> {
        self.online().await?;
        let (secret, offer, left) = self.link_offer_lifetime(code).await?;
        // Too little time left to publish, send the history and answer: the device would be
        // listed and never provisioned.
        if left < MIN_OFFER_SECS_LEFT {
            return Err(ClientError::LinkExpired);
        }
        let shown = NewDevice { label: offer.label().to_owned(), fingerprint: offer.fingerprint() };
        if !confirm(&shown) {
            return Err(ClientError::Cancelled);
        }
        let (list, entry, account) = {
            let _guard = self.lock_state().await?;
            let current = self.own_list().await?;
            // Taken after the own list: looking at it may have taken a rotated key.
            let account = self.me.account.clone().ok_or(ClientError::NotApprover)?;
            // Approved already (a re-run after the answer failed): the same entry, answered
            // again, rather than the same device listed twice.
            if let Some(e) = current.devices().iter().find(|d| d.identity == *offer.device()) {
                (current.clone(), e.clone(), account)
            } else {
                let status = self.api.device_status().await?;
                let top = current
                    .devices()
                    .iter()
                    .map(|d| d.id.get())
                    .chain(status.devices.iter().map(|d| d.device))
                    .chain([status.max_device_id])
                    .max()
                    .unwrap_or(0);
                let id =
                    top.checked_add(1).and_then(DeviceId::new).ok_or(ClientError::Internal("device id"))?;
                let entry = DeviceEntry {
                    id,
                    identity: offer.device().clone(),
                    approver: options.approver,
                    added_ms: now_ms(),
                    label: offer.label().to_owned(),
                };
                let mut devices = current.devices().to_vec();
                devices.push(entry.clone());
                let list = DeviceList::sign(&account, self.me.name.clone(), current.version() + 1, devices)
                    .map_err(|source| ClientError::DeviceList {
                    name: self.me.name.to_string(),
                    source,
                })?;
                let prekeys = api::PrekeyUploadRequest {
                    signed_prekey: Some(api::Bytes(offer.signed_prekey().to_bytes())),
                    last_resort: Some(api::Bytes(offer.last_resort_prekey().to_bytes())),
                    ..Default::default()
                };
                self.publish_own_list(&list, None, vec![api::NewDevicePrekeys { device: id.get(), prekeys }])
                    .await?;
                (list, entry, account)
            }
        };
        // Published first: whatever is sent from now on reaches the new device directly, and
        // the archive holds everything before.
        let history = if options.history { Some(self.export_history(progress).await?) } else { None };
        let provisioning = Provisioning {
            account: self.me.name.clone(),
            device_id: entry.id,
            approver_id: self.me.device,
            device_list: list.to_bytes(),
            account_identity: options.approver.then(|| account.clone()),
            history: history.as_ref().map(ref_of),
        };
        let answer = offer.seal_answer(&mut OsRng, &provisioning)?;
        match self
            .api
            .link_answer_put(&secret.slot_id(), &api::LinkAnswerRequest { answer: api::Bytes(answer) })
            .await
        {
            Ok(()) => {}
            // The slot is gone or answered by someone else: the device will never be provisioned
            // by this answer, so it leaves the list again (a listed device nobody reads would
            // take every contact's messages into a mailbox that only fills).
            Err(
                e @ (ClientError::NotFound(_)
                | ClientError::Server { code: Some(api::ErrorCode::AlreadyUsed), .. }),
            ) => {
                let _ = self.unlist(entry.id).await;
                return Err(match e {
                    ClientError::NotFound(_) => ClientError::LinkExpired,
                    _ => ClientError::LinkUsed,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(DeviceInfo {
            id: entry.id.get(),
            label: entry.label,
            added_ms: entry.added_ms,
            last_seen_ms: None,
            current: false,
            approver: entry.approver,
        })
    }

    /// The own account's current list from the server, verified against the own account key
    /// and the last accepted own list (no rollback); stored as accepted.
    pub(crate) async fn own_list(&mut self) -> Result<DeviceList> {
        let bytes = self.api.device_list(self.me.name.as_str()).await?;
        let previous = self.accepted_own_list()?;
        let list = match DeviceList::verify(
            &bytes,
            &self.me.name,
            Some(&self.me.account_key),
            previous.as_ref(),
        ) {
            Ok(list) => list,
            // A rotation this device published but did not record (a crash between the
            // server's answer and the commit): the key it made is the one the list names.
            Err(tacit_protocol::DeviceListError::AccountKeyChanged) => {
                match self.adopt_pending_rotation(&bytes) {
                    Ok(list) => list,
                    // Another device rotated the key and its update waits in the mailbox: take
                    // it (with whatever else is there, stored for the history) and look again.
                    Err(e) if !std::mem::replace(&mut self.own_list_retried, true) => {
                        let got = Box::pin(self.receive(Duration::ZERO)).await;
                        let again = match got {
                            Ok(got) => {
                                if !got.is_empty() {
                                    self.warnings.push(format!(
                                        "{} message(s) arrived meanwhile and were stored: see `tacit history`",
                                        got.len()
                                    ));
                                }
                                Box::pin(self.own_list()).await
                            }
                            Err(r) => Err(r),
                        };
                        self.own_list_retried = false;
                        return again.map_err(|_| e);
                    }
                    // No update in the mailbox (this device was restored from a copy older
                    // than the rotation, whose update it had taken): the signed rotations.
                    Err(e) => return self.follow_rotations().await?.ok_or(e),
                }
            }
            Err(source) => {
                return Err(ClientError::DeviceList { name: self.me.name.to_string(), source });
            }
        };
        self.accept_own_list(&list)?;
        Ok(list)
    }

    /// The own account's current list when it is signed by a key this device missed:
    /// reached from the key this device holds through the account's rotations the server
    /// kept, each signed by the key before it (what an account key update from an own
    /// device proves too), and listing this device as it is. Stores it as accepted; an
    /// account key this device holds that is no longer the account's is deleted (it can
    /// publish nothing), and the user is told. `None` when no chain leads to it.
    pub(crate) async fn follow_rotations(&mut self) -> Result<Option<DeviceList>> {
        let name = self.me.name.clone();
        let mut after = self.accepted_own_list()?.map_or(0, |p| p.version());
        let mut key = self.me.account_key;
        let mut followed = 0usize;
        for _ in 0..MAX_ROTATION_PAGES {
            let page = self.api.rotations(name.as_str(), after).await?;
            let mut cursor = after;
            for r in &page.rotations {
                let Ok(list) = DeviceList::verify(&r.device_list.0, &name, None, None) else { continue };
                if list.version() <= cursor {
                    continue;
                }
                cursor = list.version();
                let Ok(sig) = <[u8; 64]>::try_from(r.rotation_signature.0.as_slice()) else { continue };
                let sig = tacit_protocol::Signature::from_bytes(sig);
                if DeviceList::verify_rotation(&key, &r.device_list.0, &sig).is_ok() {
                    key = *list.account_key();
                    followed += 1;
                }
            }
            if !page.more || cursor == after {
                break;
            }
            after = cursor;
        }
        if followed == 0 {
            return Ok(None);
        }
        let bytes = self.api.device_list(name.as_str()).await?;
        let Ok(list) = DeviceList::verify(&bytes, &name, Some(&key), None) else { return Ok(None) };
        if list.entry(self.me.device).is_none_or(|e| e.identity != *self.me.identity.public()) {
            return Ok(None);
        }
        let stale = self.me.account.as_ref().is_some_and(|a| a.public() != key);
        let tx = self.store.tx()?;
        if stale {
            store::delete_meta(&tx, meta::ACCOUNT_IDENTITY)?;
        }
        // A rotation of this device's own that never reached the server is moot now.
        store::delete_meta(&tx, meta::PENDING_ACCOUNT_IDENTITY)?;
        store::delete_meta(&tx, meta::KEY_UPDATE_PENDING)?;
        tx.commit()?;
        if stale {
            self.me.account = None;
        }
        self.accept_own_list(&list)?;
        self.warnings.push(format!(
            "this device had missed {followed} change(s) of your account key (it was restored from an older copy, \
             or the update never reached it); it followed them, each signed by the key before it, to the \
             current one"
        ));
        if stale {
            self.warnings.push(
                "the account key this device held is no longer your account's and was deleted here: this device \
                 can no longer approve or revoke devices (to make it an approver again, revoke it from a device \
                 that holds the key and link it again)"
                    .to_owned(),
            );
        }
        Ok(Some(list))
    }

    /// The list `bytes` signed by the key of an unfinished rotation of this device, which it
    /// now records as the account key; anything else is the own account's key changing
    /// without this device's knowledge, refused.
    fn adopt_pending_rotation(&mut self, bytes: &[u8]) -> Result<DeviceList> {
        let changed = || ClientError::DeviceList {
            name: self.me.name.to_string(),
            source: tacit_protocol::DeviceListError::AccountKeyChanged,
        };
        let Some(pending) = self.store.meta(meta::PENDING_ACCOUNT_IDENTITY)? else { return Err(changed()) };
        let account = AccountIdentity::from_bytes(&pending)?;
        let list =
            DeviceList::verify(bytes, &self.me.name, Some(&account.public()), None).map_err(|_| changed())?;
        let tx = self.store.tx()?;
        store::set_meta(&tx, meta::ACCOUNT_IDENTITY, &account.to_bytes())?;
        store::delete_meta(&tx, meta::PENDING_ACCOUNT_IDENTITY)?;
        tx.commit()?;
        self.me.account_key = account.public();
        self.me.account = Some(account);
        Ok(list)
    }

    /// The newest own list this device accepted: the own contact row (advanced by sends to
    /// the own account) or the one recorded with this device's own changes, whichever is
    /// newer; a stored one that no longer verifies is an error, not a missing baseline.
    pub(crate) fn accepted_own_list(&self) -> Result<Option<DeviceList>> {
        let err = |source| ClientError::DeviceList { name: self.me.name.to_string(), source };
        let meta_list = match self.store.meta(meta::DEVICE_LIST)? {
            Some(b) => {
                Some(DeviceList::verify(&b, &self.me.name, Some(&self.me.account_key), None).map_err(err)?)
            }
            None => None,
        };
        let row_list = match self.store.contact(self.me.name.as_str())? {
            Some(c) if c.account_key == *self.me.account_key.as_bytes() => Some(
                DeviceList::verify(&c.device_list, &self.me.name, Some(&self.me.account_key), None)
                    .map_err(err)?,
            ),
            _ => None,
        };
        Ok(match (meta_list, row_list) {
            (Some(a), Some(b)) => Some(if b.version() > a.version() { b } else { a }),
            (a, b) => a.or(b),
        })
    }

    /// Stores `list` as the own account's accepted list (meta and the own contact row); never
    /// goes back to an older version than either holds.
    fn accept_own_list(&mut self, list: &DeviceList) -> Result<()> {
        if list.account_key() == &self.me.account_key
            && self.accepted_own_list()?.is_some_and(|p| p.version() > list.version())
        {
            return Err(ClientError::DeviceList {
                name: self.me.name.to_string(),
                source: tacit_protocol::DeviceListError::Rollback {
                    have: self.accepted_own_list()?.map_or(0, |p| p.version()),
                    got: list.version(),
                },
            });
        }
        let bytes = list.to_bytes();
        let tx = self.store.tx()?;
        store::set_meta(&tx, meta::DEVICE_LIST, &bytes)?;
        store::set_meta(&tx, meta::ACCOUNT_KEY, list.account_key().as_bytes())?;
        let row = ContactRow {
            account_key: *list.account_key().as_bytes(),
            device_list: bytes,
            verified: true,
            pending: None,
        };
        store::put_contact(&tx, self.me.name.as_str(), &row)?;
        tx.commit()?;
        self.me.account_key = *list.account_key();
        Ok(())
    }

    async fn publish_own_list(
        &mut self,
        list: &DeviceList,
        rotation: Option<Vec<u8>>,
        new_devices: Vec<api::NewDevicePrekeys>,
    ) -> Result<()> {
        let req = api::PublishDeviceListRequest {
            device_list: api::Bytes(list.to_bytes()),
            rotation_signature: rotation.map(api::Bytes),
            new_devices,
        };
        self.api.publish_device_list(self.me.name.as_str(), &req).await?;
        self.kt_note_list_sent(&req.device_list.0).await;
        self.accept_own_list(list)
    }

    /// The account's devices, from the current signed list and what the server saw of them.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        self.online().await?;
        let _guard = self.lock_state().await?;
        let list = self.own_list().await?;
        let status = self.api.device_status().await?;
        // The server's word that a device logged out is not proof (a server could say it of
        // any device): the user is told, and decides with `device revoke`.
        for d in status.devices.iter().filter(|d| d.logged_out) {
            if let Some(e) = DeviceId::new(d.device).and_then(|id| list.entry(id)) {
                let label = if e.label.is_empty() { String::new() } else { format!(" ({})", e.label) };
                self.warnings.push(format!(
                    "device {}{label} logged itself out, the server says: run `tacit device revoke {}` from a \
                     device holding the account key to remove it from your signed list",
                    d.device, d.device
                ));
            }
        }
        Ok(list
            .devices()
            .iter()
            .map(|d| DeviceInfo {
                id: d.id.get(),
                label: d.label.clone(),
                added_ms: d.added_ms,
                last_seen_ms: status
                    .devices
                    .iter()
                    .find(|s| s.device == d.id.get())
                    .and_then(|s| s.last_seen_ms),
                current: d.id == self.me.device,
                approver: d.approver,
            })
            .collect())
    }

    /// Revokes device `id`. An approver publishes a list without it (rotating the account key
    /// when `id` held it; the last approver cannot be revoked). A device that holds no
    /// account key can only revoke itself: it logs out. Revoking this device removes the
    /// account from this home. Returns whether the account key was rotated.
    pub async fn revoke_device(&mut self, id: u32) -> Result<Revoked> {
        self.online().await?;
        let Some(_) = self.me.account.clone() else {
            if id != self.me.device.get() {
                return Err(ClientError::NotApprover);
            }
            let _guard = self.lock_state().await?;
            self.api.logout_device(id).await?;
            return self.removed_here().map(|()| Revoked { rotated: false, this_device: true });
        };
        let _guard = self.lock_state().await?;
        let current = self.own_list().await?;
        let account = self.me.account.clone().ok_or(ClientError::NotApprover)?;
        let target = current
            .devices()
            .iter()
            .find(|d| d.id.get() == id)
            .ok_or(ClientError::UnknownDevice { name: self.me.name.to_string(), device: id })?
            .clone();
        let devices: Vec<DeviceEntry> =
            current.devices().iter().filter(|d| d.id.get() != id).cloned().collect();
        if !devices.iter().any(|d| d.approver) {
            return Err(ClientError::LastApprover);
        }
        let this_device = id == self.me.device.get();
        let version = current.version() + 1;
        // Revoking another device that held the account key (lost, stolen, sold) rotates the
        // key. An approver that revokes itself (logging out) erases its own copy with the rest
        // of its data, so the key stays: nothing it held is in anyone else's hands.
        let rotated = target.approver && !this_device;
        if rotated {
            // The revoked device held the account key: a new one, signed over by the old.
            let new_account = AccountIdentity::generate(&mut OsRng)?;
            let list = DeviceList::sign(&new_account, self.me.name.clone(), version, devices)
                .map_err(|source| ClientError::DeviceList { name: self.me.name.to_string(), source })?;
            let rotation = DeviceList::sign_rotation(&account, &list.to_bytes());
            // The new key is stored before it is published: a crash in between leaves this
            // device able to publish again, never a published key nobody holds.
            let tx = self.store.tx()?;
            store::set_meta(&tx, meta::PENDING_ACCOUNT_IDENTITY, &new_account.to_bytes())?;
            tx.commit()?;
            match self.publish_own_list(&list, Some(rotation.as_bytes().to_vec()), Vec::new()).await {
                Ok(()) => {}
                Err(e @ ClientError::Server { code: Some(api::ErrorCode::DeviceListConflict), .. }) => {
                    // Refused for good: the key made for it is never used.
                    let tx = self.store.tx()?;
                    store::delete_meta(&tx, meta::PENDING_ACCOUNT_IDENTITY)?;
                    tx.commit()?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            let tx = self.store.tx()?;
            store::set_meta(&tx, meta::ACCOUNT_IDENTITY, &new_account.to_bytes())?;
            store::delete_meta(&tx, meta::PENDING_ACCOUNT_IDENTITY)?;
            // The value is the list the rotation replaced, sent with the update (it names this
            // device an approver under the old key, for devices that have not seen it yet).
            store::set_meta(&tx, meta::KEY_UPDATE_PENDING, &current.to_bytes())?;
            tx.commit()?;
            self.me.account = Some(new_account.clone());
            self.me.account_key = new_account.public();
            drop(_guard);
            // The other devices must hear of the new key; until they have, every command that
            // reaches the server tries again (`Client::online`).
            if let Err(e) = self.send_key_update_if_pending().await {
                self.warnings.push(format!(
                    "the account key was replaced, but your other devices could not be told yet ({e}); the next \
                     command that reaches the server tries again"
                ));
            }
            return Ok(Revoked { rotated, this_device });
        } else {
            let list = DeviceList::sign(&account, self.me.name.clone(), version, devices)
                .map_err(|source| ClientError::DeviceList { name: self.me.name.to_string(), source })?;
            self.publish_own_list(&list, None, Vec::new()).await?;
        }
        if this_device {
            self.removed_here()?;
        }
        Ok(Revoked { rotated, this_device })
    }

    /// Publishes the own list without device `id` (one this device just listed and could not
    /// provision).
    async fn unlist(&mut self, id: DeviceId) -> Result<()> {
        let account = self.me.account.clone().ok_or(ClientError::NotApprover)?;
        let _guard = self.lock_state().await?;
        let current = self.own_list().await?;
        let devices: Vec<DeviceEntry> = current.devices().iter().filter(|d| d.id != id).cloned().collect();
        if devices.len() == current.devices().len() {
            return Ok(());
        }
        let list = DeviceList::sign(&account, self.me.name.clone(), current.version() + 1, devices)
            .map_err(|source| ClientError::DeviceList { name: self.me.name.to_string(), source })?;
        self.publish_own_list(&list, None, Vec::new()).await
    }

    /// This device left the account: remove it from this home.
    fn removed_here(&mut self) -> Result<()> {
        // The open store's files are unlinked; any later call on this client finds its
        // store.db gone and stops (`AccountRemoved`).
        wipe(self.store.home())
    }

    /// Sends the account key update a rotation left to send (see [`Self::revoke_device`]).
    pub(crate) async fn send_key_update_if_pending(&mut self) -> Result<()> {
        let Some(previous) = self.store.meta(meta::KEY_UPDATE_PENDING)? else {
            return Ok(());
        };
        let Some(account) = self.me.account.clone() else { return Ok(()) };
        let list = {
            let _guard = self.lock_state().await?;
            self.own_list().await?
        };
        self.send_account_key_update(&list, &previous, &account).await?;
        let tx = self.store.tx()?;
        store::delete_meta(&tx, meta::KEY_UPDATE_PENDING)?;
        tx.commit()?;
        Ok(())
    }

    /// Tells the account's other devices the new account key after a rotation: the new signed
    /// list to every one, the new key to those that hold it (each device its own payload,
    /// over its session).
    async fn send_account_key_update(
        &mut self,
        list: &DeviceList,
        previous: &[u8],
        account: &AccountIdentity,
    ) -> Result<()> {
        let bytes = list.to_bytes();
        let secret = account.to_bytes();
        let sent_time_ms = now_ms();
        let to_approver = Payload::account_key_update(sent_time_ms, &bytes, previous, Some(&secret))
            .map_err(|_| ClientError::Internal("account key update"))?;
        let to_other = Payload::account_key_update(sent_time_ms, &bytes, previous, None)
            .map_err(|_| ClientError::Internal("account key update"))?;
        let approvers: Vec<u32> = list.approvers().map(|d| d.id.get()).collect();
        let per_device = move |device: u32| -> Zeroizing<Vec<u8>> {
            if approvers.contains(&device) { to_approver.clone() } else { to_other.clone() }
        };
        let name = self.me.name.clone();
        let out = Outgoing {
            payload: &[],
            sent_time_ms,
            message_id: None,
            history: None,
            outbox: OutboxMode::None,
        };
        self.send_payload_with(&name, &out, Some(&per_device)).await.map(drop)
    }

    /// After [`Self::account_key_update`] committed: the new key in memory, and the user told.
    pub(crate) fn account_key_updated(&mut self, update: KeyUpdate) -> Result<()> {
        self.me.account_key = update.key;
        self.me.account = update.identity;
        self.warnings.push(format!(
            "your device {} replaced your account key after revoking a device that held it: your contacts \
             will be warned that your identity changed, and your safety numbers with them change (compare \
             them again)",
            update.from
        ));
        Ok(())
    }
}

/// Checks an account key update from `device` of the own account (`own`) inside the receive
/// transaction: the sender held the account key in the own list this device accepted
/// (`previous`), the new list is newer, verifies under the key it names, and lists this device
/// (`me`); a key is taken only by a device the new list makes an approver, and only if it is
/// the list's. Stores the list and key; [`Client::account_key_updated`] then updates memory.
// Each argument is part of the receive transaction's context (what it holds, who sent it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn account_key_update(
    tx: &rusqlite::Transaction<'_>,
    me: (&AccountName, DeviceId, &tacit_protocol::DevicePublic),
    previous: Option<&DeviceList>,
    own: bool,
    device: DeviceId,
    bytes: &[u8],
    replaced: &[u8],
    account: Option<&AccountSecret>,
) -> Result<KeyUpdate> {
    let refuse = |why: &str| ClientError::KeyUpdateRefused { device: device.get(), why: why.to_owned() };
    if !own {
        return Err(refuse("only your own devices send those"));
    }
    // The list the rotation replaced, under the key this device holds and no older than what
    // it accepted: it names an approver this device may not have seen yet (linked since).
    let carried =
        previous.and_then(|p| DeviceList::verify(replaced, me.0, Some(p.account_key()), Some(p)).ok());
    let previous = match (previous, carried.as_ref()) {
        (Some(p), Some(c)) if c.version() > p.version() => Some(c),
        (p, _) => p,
    };
    if !previous.is_some_and(|p| p.entry(device).is_some_and(|e| e.approver)) {
        return Err(refuse("the sending device does not hold the account key"));
    }
    let list = DeviceList::verify(bytes, me.0, None, None)
        .map_err(|e| refuse(&format!("the new device list does not verify: {e}")))?;
    // The list this device already reached through the signed rotations
    // ([`Client::follow_rotations`]): only the key is new to it.
    let reached = previous.is_some_and(|p| p.version() == list.version() && p.to_bytes() == bytes);
    if !reached && previous.is_some_and(|p| p.version() >= list.version()) {
        return Err(refuse("the new device list is not newer than the one this device has"));
    }
    if !list.entry(device).is_some_and(|e| e.approver) {
        return Err(refuse("the sending device does not hold the new account key"));
    }
    let Some(mine) = list.entry(me.1).filter(|e| e.identity == *me.2) else {
        return Err(refuse("the new device list does not list this device"));
    };
    let identity = match account {
        Some(a) if mine.approver => {
            let id = AccountIdentity::from_bytes(&a.0)?;
            if id.public() != *list.account_key() {
                return Err(refuse("the key sent is not the new list's"));
            }
            Some(id)
        }
        _ => None,
    };
    store::set_meta(tx, meta::DEVICE_LIST, bytes)?;
    store::set_meta(tx, meta::ACCOUNT_KEY, list.account_key().as_bytes())?;
    match &identity {
        Some(id) => store::set_meta(tx, meta::ACCOUNT_IDENTITY, &id.to_bytes())?,
        None => store::delete_meta(tx, meta::ACCOUNT_IDENTITY)?,
    }
    let row = ContactRow {
        account_key: *list.account_key().as_bytes(),
        device_list: bytes.to_vec(),
        verified: true,
        pending: None,
    };
    store::put_contact(tx, me.0.as_str(), &row)?;
    Ok(KeyUpdate { key: *list.account_key(), identity, from: device.get() })
}

/// An account key update accepted in a receive, to apply once it is committed.
pub(crate) struct KeyUpdate {
    key: AccountKey,
    identity: Option<AccountIdentity>,
    from: u32,
}

/// What [`Client::revoke_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// The account key was rotated (the revoked device held it): contacts see a new safety
    /// number.
    pub rotated: bool,
    /// This device was revoked (logged out): the account is gone from this home.
    pub this_device: bool,
}

/// Whether no re-run of the import can succeed: the archive is not what was announced, or
/// cannot be read by this version, or the server no longer has it. The network, the
/// server's own failures, the store and the disk are worth another try.
fn history_failure_is_final(e: &HistoryError) -> bool {
    match e {
        HistoryError::Tampered
        | HistoryError::Truncated
        | HistoryError::DigestMismatch
        | HistoryError::SizeMismatch { .. }
        | HistoryError::TooLarge(_)
        | HistoryError::Malformed(_)
        | HistoryError::UnknownVersion(_)
        | HistoryError::Server(_) => true,
        HistoryError::Client(c) => matches!(c, ClientError::NotFound(_)),
        HistoryError::File { .. } | HistoryError::Internal(_) => false,
    }
}

/// The provisioning message's form of a history archive reference.
fn ref_of(a: &HistoryArchive) -> HistoryRef {
    HistoryRef {
        blob_id: a.blob_id,
        key: Zeroizing::new(*a.key.expose_secret()),
        size: a.size,
        plain_size: a.plain_size,
        digest: a.digest,
    }
}

/// The history transfer's form of a provisioning message's archive reference.
fn archive_of(h: &HistoryRef) -> HistoryArchive {
    HistoryArchive {
        blob_id: h.blob_id,
        key: ArchiveKey::from_bytes(*h.key),
        size: h.size,
        plain_size: h.plain_size,
        digest: h.digest,
    }
}
