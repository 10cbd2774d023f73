//! Contacts: device lists verified against the pinned account key, safety numbers and
//! verification.
//!
//! The first device list seen for a name pins its account key (trust on first use). A later
//! list signed by another key is a key change: for an unverified contact it replaces the pin
//! with a warning (and old sessions are dropped); for a verified contact it is held as
//! *pending* and nothing is sent to or accepted from the contact until the user compares the
//! new safety number and runs `verify` again.

use tacit_protocol::{
    AccountKey, AccountName, DeviceId, DeviceList, DeviceListError, SafetyNumber, VerifiedDevice,
};

use crate::client::Client;
use crate::error::{ClientError, Result};
use crate::store::{self, ContactRow};

/// Device-list fetches one `receive` makes for envelopes its stored lists cannot decrypt (one
/// per sender and claimed identity); past it such envelopes are held for the next `receive`,
/// so envelopes that claim ever new identities cannot make one receive fetch without end.
pub(crate) const MAX_LIST_FETCHES_PER_RECEIVE: usize = 64;

/// What the text form of a scannable safety number starts with.
pub const SCAN_PREFIX: &str = "TACIT-SN1-";

fn key_from(bytes: &[u8; 32]) -> Result<AccountKey> {
    Ok(AccountKey::from_bytes(*bytes)?)
}

impl Client {
    fn list_error(name: &AccountName, source: DeviceListError) -> ClientError {
        ClientError::DeviceList { name: name.to_string(), source }
    }

    /// The stored, accepted device list of `name` (verified again from the store).
    pub(crate) fn stored_list(&self, name: &AccountName) -> Result<Option<(ContactRow, DeviceList)>> {
        let Some(c) = self.store.contact(name.as_str())? else { return Ok(None) };
        if let Some(list) = self.verified_list(name, &c.device_list)
            && list.account_key().as_bytes() == &c.account_key
        {
            return Ok(Some((c, list)));
        }
        let key = key_from(&c.account_key)?;
        let list = DeviceList::verify(&c.device_list, name, Some(&key), None)
            .map_err(|e| Self::list_error(name, e))?;
        self.remember_list(name, &c.device_list, &list);
        Ok(Some((c, list)))
    }

    /// A list this client already verified from exactly `bytes`.
    fn verified_list(&self, name: &AccountName, bytes: &[u8]) -> Option<DeviceList> {
        let cache = self.verified_lists.lock().ok()?;
        cache.get(name.as_str()).filter(|(b, _)| b.as_slice() == bytes).map(|(_, l)| l.clone())
    }

    fn remember_list(&self, name: &AccountName, bytes: &[u8], list: &DeviceList) {
        if let Ok(mut cache) = self.verified_lists.lock() {
            // Bounded: one entry per contact this process touched, at most a few thousand.
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(name.to_string(), (bytes.to_vec(), list.clone()));
        }
    }

    /// Fetches `name`'s device list from the key transparency directory and accepts it under
    /// the contact rules above.
    pub(crate) async fn refresh_contact(&mut self, name: &AccountName) -> Result<DeviceList> {
        // Another account's list as the key transparency directory holds it, proof verified
        // (`transparency.rs`): the server cannot hand this client a list it has not
        // published for everyone. The own account's list is the server's current one: it
        // must verify under the account key this device holds (a server cannot make one),
        // a change of that key is accepted only from an own device (`devices.rs`), and
        // the directory's copy of it is checked by the own-history monitor instead; this
        // device may have published it a moment ago, before the next epoch.
        let bytes = if *name == self.me.name {
            match self.api.device_list(name.as_str()).await {
                Err(ClientError::NotFound(_)) => {
                    return Err(ClientError::NotFound(format!("no account named {name}")));
                }
                r => r?,
            }
        } else {
            self.kt_device_list(name).await?
        };
        let Some((c, previous)) = self.stored_list(name)? else {
            // The own account (its other devices) is pinned to the key this device knows and
            // verified: a change of it is accepted only from an own device (`devices.rs`).
            let own = *name == self.me.name;
            let known = own.then_some(self.me.account_key);
            let list = DeviceList::verify(&bytes, name, known.as_ref(), None)
                .map_err(|e| Self::list_error(name, e))?;
            let row = ContactRow {
                account_key: *list.account_key().as_bytes(),
                device_list: bytes,
                verified: own,
                pending: None,
            };
            store::put_contact(self.store.conn(), name.as_str(), &row)?;
            return Ok(list);
        };
        // The list the server sends is the one accepted already (the common case: every
        // send fetches it): nothing to verify or store again.
        if bytes == c.device_list && c.pending.is_none() {
            return Ok(previous);
        }
        let pinned = key_from(&c.account_key)?;
        match DeviceList::verify(&bytes, name, Some(&pinned), Some(&previous)) {
            Ok(list) => {
                let row = ContactRow { device_list: bytes, pending: None, ..c };
                store::put_contact(self.store.conn(), name.as_str(), &row)?;
                self.device_notices(name, &previous, &list)?;
                Ok(list)
            }
            Err(DeviceListError::AccountKeyChanged) => {
                let list =
                    DeviceList::verify(&bytes, name, None, None).map_err(|e| Self::list_error(name, e))?;
                let new_key = *list.account_key().as_bytes();
                if c.verified {
                    let row = ContactRow { pending: Some((new_key, bytes)), ..c };
                    store::put_contact(self.store.conn(), name.as_str(), &row)?;
                    return Err(ClientError::IdentityChanged(name.to_string()));
                }
                let tx = self.store.tx()?;
                let deleted = drop_changed_sessions(&tx, name, &previous, &list)?;
                let row =
                    ContactRow { account_key: new_key, device_list: bytes, verified: false, pending: None };
                store::put_contact(&tx, name.as_str(), &row)?;
                tx.commit()?;
                self.gens.forget(&deleted)?;
                self.warnings.push(format!(
                    "{name}'s identity key changed (a new installation, or an attack): compare safety numbers \
                     with `tacit safety-number {name}` and `tacit verify {name} DIGITS`"
                ));
                Ok(list)
            }
            Err(e) => Err(Self::list_error(name, e)),
        }
    }

    /// Tells the user about each device `list` adds to `previous` (trusted through the
    /// account's signature; a notice, in `receive` output and in the history) and each it
    /// removes.
    fn device_notices(&mut self, name: &AccountName, previous: &DeviceList, list: &DeviceList) -> Result<()> {
        let own = *name == self.me.name;
        for d in list.devices() {
            if previous.entry(d.id).is_some() || (own && d.id == self.me.device) {
                continue;
            }
            let label = if d.label.is_empty() { format!("device {}", d.id) } else { d.label.clone() };
            let text = if own {
                format!("a device was added to your account: {label}")
            } else {
                format!("{name} added a device: {label}")
            };
            self.notice(name, text)?;
        }
        for d in previous.devices() {
            if list.entry(d.id).is_none() {
                let label = if d.label.is_empty() { format!("device {}", d.id) } else { d.label.clone() };
                let text = if own {
                    format!("a device was removed from your account: {label}")
                } else {
                    format!("{name} removed a device: {label}")
                };
                self.notice(name, text)?;
            }
        }
        Ok(())
    }

    /// A notice about `peer` for the user: a warning now and a line in the history.
    pub(crate) fn notice(&mut self, peer: &AccountName, text: String) -> Result<()> {
        store::add_notice(self.store.conn(), peer.as_str(), &text, crate::client::now_ms())?;
        self.warnings.push(text);
        Ok(())
    }

    /// A sender's device as the stored, accepted list has it (no request; a pending key
    /// change is ignored here: messages that still decrypt under the accepted identity are
    /// authentic).
    pub(crate) fn stored_device(
        &self,
        name: &AccountName,
        device: DeviceId,
    ) -> Result<Option<VerifiedDevice>> {
        Ok(self.stored_list(name)?.and_then(|(_, list)| list.verified_device(device)))
    }

    /// A sender's device as the server lists it now, for an envelope the stored list cannot
    /// decrypt (`claimed`: the identity a prekey message names). Fetches the list at most once
    /// per sender and claimed identity in one receive, and at most
    /// [`MAX_LIST_FETCHES_PER_RECEIVE`] times; the list is accepted under the contact rules
    /// above. `Ok(None)`: it could not be checked now (over that bound, or the server refused),
    /// so the envelope is held. A verified contact whose key changed is
    /// [`ClientError::IdentityChanged`].
    pub(crate) async fn current_device(
        &mut self,
        name: &AccountName,
        device: DeviceId,
        claimed: Option<[u8; 32]>,
    ) -> Result<Option<VerifiedDevice>> {
        let key = (name.to_string(), claimed);
        if !self.list_fetches.contains(&key) {
            if self.list_fetches.len() >= MAX_LIST_FETCHES_PER_RECEIVE {
                return Ok(None);
            }
            match self.refresh_contact(name).await {
                Ok(_) | Err(ClientError::IdentityChanged(_)) => {}
                // Rate-limited or unavailable: try again at the next receive.
                Err(ClientError::Server { .. }) => return Ok(None),
                Err(e @ (ClientError::NotFound(_) | ClientError::DeviceList { .. })) => {
                    self.list_fetches.insert(key);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            self.list_fetches.insert(key);
        }
        let unknown = || ClientError::UnknownDevice { name: name.to_string(), device: device.get() };
        let Some((c, list)) = self.stored_list(name)? else { return Err(unknown()) };
        if c.pending.is_some() {
            return Err(ClientError::IdentityChanged(name.to_string()));
        }
        list.verified_device(device).map(Some).ok_or_else(unknown)
    }

    /// The safety number with `name` (12 groups of 5 digits), for the account key the server
    /// now publishes (a pending changed key if there is one). Works offline from the store.
    pub async fn safety_number(&mut self, name: &str) -> Result<String> {
        // Refreshing the contact may replace its pin and drop its sessions.
        let _guard = self.lock_state().await?;
        Ok(self.safety_number_inner(name).await?.0.display())
    }

    async fn safety_number_inner(&mut self, name: &str) -> Result<(SafetyNumber, [u8; 32], Vec<u8>)> {
        let name = AccountName::new(name)?;
        if let Err(e) = self.refresh_contact(&name).await {
            match e {
                ClientError::IdentityChanged(_) | ClientError::Network(_) | ClientError::Server { .. } => {}
                e => return Err(e),
            }
        }
        let c = self
            .store
            .contact(name.as_str())?
            .ok_or_else(|| ClientError::UnknownContact(name.to_string()))?;
        let (key, list) = match c.pending {
            Some((k, l)) => (k, l),
            None => (c.account_key, c.device_list),
        };
        let number = SafetyNumber::new(&self.me.name, &self.me.account_key, &name, &key_from(&key)?);
        Ok((number, key, list))
    }

    /// Compares the typed safety number (spaces ignored) in constant time; on a match marks
    /// the contact verified (accepting a pending key change), otherwise fails with
    /// [`ClientError::VerificationFailed`] and changes nothing.
    pub async fn verify(&mut self, name: &str, digits: &str) -> Result<()> {
        let _guard = self.lock_state().await?;
        let (number, key, list) = self.safety_number_inner(name).await?;
        let name = AccountName::new(name)?;
        if !number.matches_digits(digits) {
            return Err(ClientError::VerificationFailed(name.to_string()));
        }
        self.mark_verified(&name, key, list)
    }

    /// The scannable form of the safety number with `name`, as text for a QR code:
    /// [`SCAN_PREFIX`] then the payload in upper-case hex (QR alphanumeric mode).
    pub async fn safety_number_payload(&mut self, name: &str) -> Result<String> {
        let _guard = self.lock_state().await?;
        let (number, _, _) = self.safety_number_inner(name).await?;
        Ok(format!("{SCAN_PREFIX}{}", hex::encode_upper(number.scannable())))
    }

    /// Checks a payload scanned from `name`'s screen ([`Self::safety_number_payload`] there)
    /// in constant time; on a match marks the contact verified as [`Self::verify`] does,
    /// otherwise [`ClientError::VerificationFailed`] (a malformed payload too) and nothing
    /// changes.
    pub async fn verify_scanned(&mut self, name: &str, payload: &str) -> Result<()> {
        let _guard = self.lock_state().await?;
        let (number, key, list) = self.safety_number_inner(name).await?;
        let name = AccountName::new(name)?;
        let trimmed = payload.trim();
        let bytes = trimmed
            .get(..SCAN_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(SCAN_PREFIX))
            .and_then(|_| trimmed.get(SCAN_PREFIX.len()..))
            .and_then(|h| hex::decode(h).ok());
        match bytes {
            Some(b) if number.compare_scanned(&b).is_ok() => {}
            _ => return Err(ClientError::VerificationFailed(name.to_string())),
        }
        self.mark_verified(&name, key, list)
    }

    /// Marks `name` verified under `key` and `list` (dropping sessions made under another key).
    fn mark_verified(&mut self, name: &AccountName, key: [u8; 32], list: Vec<u8>) -> Result<()> {
        let c = self
            .store
            .contact(name.as_str())?
            .ok_or_else(|| ClientError::UnknownContact(name.to_string()))?;
        let tx = self.store.tx()?;
        let deleted = if c.account_key == key {
            Vec::new()
        } else {
            match (
                DeviceList::verify(&c.device_list, name, None, None),
                DeviceList::verify(&list, name, None, None),
            ) {
                (Ok(old), Ok(new)) => drop_changed_sessions(&tx, name, &old, &new)?,
                _ => store::delete_sessions(&tx, name.as_str(), None)?,
            }
        };
        let row = ContactRow { account_key: key, device_list: list, verified: true, pending: None };
        store::put_contact(&tx, name.as_str(), &row)?;
        tx.commit()?;
        self.gens.forget(&deleted)?;
        Ok(())
    }

    /// Whether `name` is a verified contact.
    pub fn is_verified(&self, name: &str) -> Result<bool> {
        let name = AccountName::new(name)?;
        Ok(self.store.contact(name.as_str())?.is_some_and(|c| c.verified && c.pending.is_none()))
    }
}

/// On an account key change, drops the sessions with the devices whose identity changed or
/// that left the list, and keeps the rest: a session is bound to the device's own identity
/// key (PQXDH), not to the account key, so a device listed with the same identity under the
/// new key is the device the session was made with (an account key rotation, when an
/// approver was revoked, leaves the other devices as they were). Dropping those sessions
/// too would leave the peer sending on sessions this device no longer has. Returns the
/// deleted base keys.
fn drop_changed_sessions(
    tx: &rusqlite::Transaction<'_>,
    name: &AccountName,
    old: &DeviceList,
    new: &DeviceList,
) -> Result<Vec<[u8; 32]>> {
    let mut deleted = Vec::new();
    for device in store::session_devices(tx, name.as_str())? {
        let same = DeviceId::new(device)
            .is_some_and(|id| matches!((old.device(id), new.device(id)), (Some(a), Some(b)) if a == b));
        if !same {
            deleted.extend(store::delete_sessions(tx, name.as_str(), Some(device))?);
        }
    }
    Ok(deleted)
}
