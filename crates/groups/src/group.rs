//! A device's groups: creating, joining, loading, committing, sending and receiving.

use std::collections::BTreeMap;
use std::sync::Arc;

use mls_rs::client_builder::{
    BaseConfig, WithCryptoProvider, WithGroupStateStorage, WithIdentityProvider, WithKeyPackageRepo,
    WithMlsRules,
};
use mls_rs::extension::built_in::RequiredCapabilitiesExt;
use mls_rs::group::ContentType;
use mls_rs::group::ReceivedMessage;
use mls_rs::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs::time::MlsTime;
use mls_rs::{CipherSuite, Client, ExtensionList, Group, MlsMessage, MlsMessageDescription};
use mls_rs_core::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs_core::identity::SigningIdentity;
use mls_rs_core::key_package::KeyPackageData;
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use tacit_protocol::{DeviceAddress, DeviceIdentity, UnixTime};
use zeroize::Zeroizing;

use crate::directory::Directory;
use crate::error::GroupError;
use crate::identity::TacitIdentity;
use crate::member::MemberId;
use crate::meta::{GroupMeta, META_EXTENSION};
use crate::rules::TacitRules;
use crate::storage::{GroupData, KeyPackageStore, StateStore};

/// The MLS cipher suite of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (RFC 9420 §17.1, suite 1).
    Classical,
    /// X-Wing (ML-KEM-768 + X25519) as the KEM, otherwise suite 1 (AES-128-GCM, SHA-256,
    /// Ed25519): mls-rs's `ML_KEM_768_X25519`, code point 65100 from the private range.
    PostQuantum,
}

impl Suite {
    fn cipher_suite(self) -> CipherSuite {
        match self {
            Suite::Classical => CipherSuite::CURVE25519_AES128,
            Suite::PostQuantum => CipherSuite::ML_KEM_768_X25519,
        }
    }

    /// The MLS code point.
    pub fn code_point(self) -> u16 {
        *self.cipher_suite()
    }
}

type Config = WithCryptoProvider<
    AwsLcCryptoProvider,
    WithMlsRules<
        TacitRules,
        WithIdentityProvider<
            TacitIdentity,
            WithGroupStateStorage<StateStore, WithKeyPackageRepo<KeyPackageStore, BaseConfig>>,
        >,
    >,
>;

/// Messages processed without a save before the state is written again, which bounds
/// both the memory the journal holds and the replay after a refusal.
const MAX_JOURNAL: usize = 256;

/// How long a key package is valid (RFC 9420 §10: a lifetime is required).
const KEY_PACKAGE_LIFETIME_SECS: u64 = 90 * 24 * 3600;

/// A key package made by this device: the public message to upload, its reference (how a
/// Welcome names it) and its private keys, which the caller stores encrypted.
pub struct NewKeyPackage {
    /// The `KeyPackageRef` (RFC 9420 §5.2).
    pub reference: Vec<u8>,
    /// The `MLSMessage` carrying the key package, for the server.
    pub public: Vec<u8>,
    /// The private keys (secret).
    pub secret: Zeroizing<Vec<u8>>,
}

/// A group's stored state: what the caller keeps between operations.
pub struct StoredGroup {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The group's epoch.
    pub epoch: u64,
    /// The state without the ratchet tree (secret).
    pub state: Zeroizing<Vec<u8>>,
    /// Earlier epochs' secrets kept for late messages, by epoch (secret).
    pub past_epochs: Vec<(u64, Zeroizing<Vec<u8>>)>,
}

/// A commit this device made, not yet merged: send `commit` (and `welcome` to the new
/// members), then [`OpenGroup::merge_pending`] once the server took it, or
/// [`OpenGroup::discard_pending`] if another commit won the epoch.
pub struct Commit {
    /// The commit message, for every current member.
    pub commit: Vec<u8>,
    /// The Welcome, for the members it adds.
    pub welcome: Option<Vec<u8>>,
    /// The ratchet tree the new members need with the Welcome (public: the leaves'
    /// credentials and keys; a joiner checks it against the tree hash the Welcome signs).
    pub tree: Option<Vec<u8>>,
    /// The epoch the commit is for (the group's current one).
    pub epoch: u64,
}

/// What a processed message was. Its `Debug` shows the plaintext's length, never its bytes.
#[derive(PartialEq, Eq)]
pub enum Received {
    /// A text or other application data.
    Application {
        /// Who sent it.
        sender: MemberId,
        /// The sender's leaf.
        leaf: u32,
        /// The plaintext.
        data: Vec<u8>,
        /// The epoch it was sent in.
        epoch: u64,
    },
    /// A commit: the group moved to a new epoch.
    Commit(CommitSummary),
    /// A proposal, kept for the next commit.
    Proposal {
        /// Who proposed it.
        sender: MemberId,
    },
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Application { sender, leaf, data, epoch } => f
                .debug_struct("Application")
                .field("sender", sender)
                .field("leaf", leaf)
                .field("data", &format_args!("*** ({} bytes)", data.len()))
                .field("epoch", epoch)
                .finish(),
            Self::Commit(summary) => f.debug_tuple("Commit").field(summary).finish(),
            Self::Proposal { sender } => f.debug_struct("Proposal").field("sender", sender).finish(),
        }
    }
}

/// What a commit changed, from the roster and metadata before and after it.
#[derive(Debug, PartialEq, Eq)]
pub struct CommitSummary {
    /// Who committed.
    pub committer: MemberId,
    /// The new epoch.
    pub epoch: u64,
    /// Devices added.
    pub added: Vec<MemberId>,
    /// Devices removed.
    pub removed: Vec<MemberId>,
    /// Devices whose leaf the commit replaced by a new one from a fresh key package
    /// (removed and added again in the one commit): how a device whose state fell behind
    /// (restored from an old copy) is taken back in. Not listed in `added` or `removed`.
    pub rejoined: Vec<MemberId>,
    /// The new metadata, when it changed.
    pub renamed: Option<GroupMeta>,
    /// This device was removed: the group is no longer usable.
    pub removed_me: bool,
}

/// One device's MLS side: its signing identity and the stores mls-rs works on.
pub struct GroupDevice {
    client: Client<Config>,
    states: StateStore,
    key_packages: KeyPackageStore,
    directory: Directory,
    member: MemberId,
}

impl CommitSummary {
    /// Records the devices whose leaf was replaced, taking them out of `added`/`removed`.
    fn set_rejoined(&mut self, rejoined: Vec<MemberId>) {
        self.added.retain(|m| !rejoined.contains(m));
        self.removed.retain(|m| !rejoined.contains(m));
        self.rejoined = rejoined;
    }
}

/// The devices a commit's proposals removed (by their leaf in `before`) and added again
/// (by their key package's credential): leaves replaced (RFC 9420 §12.3 applies the
/// removals before the additions).
fn rejoined_by(before: &BTreeMap<u32, MemberId>, effect: &mls_rs::group::CommitEffect) -> Vec<MemberId> {
    use mls_rs::group::CommitEffect;
    use mls_rs::group::proposal::Proposal;
    let proposals = match effect {
        CommitEffect::NewEpoch(e) | CommitEffect::Removed { new_epoch: e, .. } => &e.applied_proposals,
        CommitEffect::ReInit(_) => return Vec::new(),
    };
    let removed: Vec<&MemberId> = proposals
        .iter()
        .filter_map(|p| match &p.proposal {
            Proposal::Remove(r) => before.get(&r.to_remove()),
            _ => None,
        })
        .collect();
    let mut out: Vec<MemberId> = proposals
        .iter()
        .filter_map(|p| match &p.proposal {
            Proposal::Add(a) => MemberId::from_signing_identity(a.key_package().signing_identity()),
            _ => None,
        })
        .filter(|m| removed.contains(&m))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn time(now: UnixTime) -> MlsTime {
    MlsTime::from_duration_since_epoch(std::time::Duration::from_secs(now.0))
}

impl GroupDevice {
    /// The device `address` with `identity`, in groups of `suite`, checking members
    /// against `directory`.
    pub fn new(
        identity: &DeviceIdentity,
        address: &DeviceAddress,
        suite: Suite,
        directory: Directory,
    ) -> Self {
        let member = MemberId::new(address);
        let signing = SigningIdentity::new(
            member.credential(),
            SignaturePublicKey::new(identity.public().signing_key().as_bytes().to_vec()),
        );
        let secret = SignatureSecretKey::new(identity.mls_signature_key().to_vec());
        let states = StateStore::default();
        let key_packages = KeyPackageStore::default();
        let client = Client::builder()
            .key_package_repo(key_packages.clone())
            .group_state_storage(states.clone())
            .identity_provider(TacitIdentity::new(directory.clone()))
            .mls_rules(TacitRules)
            .crypto_provider(AwsLcCryptoProvider::default())
            .extension_type(META_EXTENSION)
            .key_package_lifetime(std::time::Duration::from_secs(KEY_PACKAGE_LIFETIME_SECS))
            .signing_identity(signing, secret, suite.cipher_suite())
            .build();
        Self { client, states, key_packages, directory, member }
    }

    /// This device as a member.
    pub fn member(&self) -> &MemberId {
        &self.member
    }

    /// The directory members are checked against.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    fn error(&self, e: mls_rs::error::MlsError, epoch: u64) -> GroupError {
        GroupError::from_mls(e, self.directory.take_missing(), epoch)
    }

    /// Makes a key package (RFC 9420 §10).
    pub fn new_key_package(&self, now: UnixTime) -> Result<NewKeyPackage, GroupError> {
        let message = self
            .client
            .generate_key_package_message(ExtensionList::new(), ExtensionList::new(), Some(time(now)))
            .map_err(|e| self.error(e, 0))?;
        let reference = message
            .key_package_reference(&self.client_cipher_suite_provider()?)
            .map_err(|e| self.error(e, 0))?
            .ok_or(GroupError::Malformed)?
            .to_vec();
        let data = self
            .key_packages
            .lock()
            .held
            .remove(&reference)
            .ok_or(GroupError::Mls("key package not stored".into()))?;
        let secret = Zeroizing::new(data.mls_encode_to_vec().map_err(|_| GroupError::Malformed)?);
        let public = message.to_bytes().map_err(|e| self.error(e, 0))?;
        Ok(NewKeyPackage { reference, public, secret })
    }

    fn client_cipher_suite_provider(&self) -> Result<impl mls_rs::CipherSuiteProvider, GroupError> {
        use mls_rs::CryptoProvider;
        let (_, suite) = self.client.signing_identity().map_err(|e| self.error(e, 0))?;
        AwsLcCryptoProvider::default()
            .cipher_suite_provider(suite)
            .ok_or(GroupError::Mls("cipher suite not supported".into()))
    }

    /// Creates a group with this device as its only member.
    pub fn create(&self, meta: &GroupMeta, now: UnixTime) -> Result<OpenGroup, GroupError> {
        let mut extensions = ExtensionList::new();
        extensions.set(meta.extension());
        // Every member must support the metadata extension (mls-rs checks each leaf against
        // the group context's extensions anyway); saying so in required_capabilities (RFC
        // 9420 §11.1) is what other implementations look for before they accept a rename:
        // openmls 0.9.2 refuses a GroupContextExtensions proposal whose extensions are not
        // listed there (tests/interop_openmls.rs).
        extensions
            .set_from(RequiredCapabilitiesExt::new(vec![META_EXTENSION], Vec::new(), Vec::new()))
            .map_err(|e| GroupError::Mls(e.to_string()))?;
        let group = self
            .client
            .create_group(extensions, ExtensionList::new(), Some(time(now)))
            .map_err(|e| self.error(e, 0))?;
        self.open(group)
    }

    fn open(&self, group: Group<Config>) -> Result<OpenGroup, GroupError> {
        let mut open = OpenGroup {
            group,
            client: self.client.clone(),
            states: self.states.clone(),
            directory: self.directory.clone(),
            baseline: None,
            journal: Vec::new(),
        };
        open.checkpoint()?;
        Ok(open)
    }

    /// The device a key package (as uploaded) names in its credential; its signature and
    /// the device list are checked when a commit adds it.
    pub fn key_package_member(key_package: &[u8]) -> Result<MemberId, GroupError> {
        let message = MlsMessage::from_bytes(key_package).map_err(|_| GroupError::Malformed)?;
        let kp = message.as_key_package().ok_or(GroupError::Malformed)?;
        MemberId::from_signing_identity(kp.signing_identity()).ok_or(GroupError::BadCredential)
    }

    /// The key package references a Welcome is for.
    pub fn welcome_references(welcome: &[u8]) -> Result<Vec<Vec<u8>>, GroupError> {
        let message = MlsMessage::from_bytes(welcome).map_err(|_| GroupError::Malformed)?;
        let refs: Vec<Vec<u8>> =
            message.welcome_key_package_references().iter().map(|r| r.to_vec()).collect();
        if refs.is_empty() {
            return Err(GroupError::Malformed);
        }
        Ok(refs)
    }

    /// Joins from a Welcome and the ratchet tree that came with it ([`Commit::tree`]),
    /// with the key package it names (`reference`, `secret` as [`NewKeyPackage`] gave them). The key package is used up: the caller deletes it
    /// (unless it is the last-resort one) in the transaction that stores the group.
    pub fn join(
        &self,
        welcome: &[u8],
        tree: &[u8],
        reference: &[u8],
        secret: &[u8],
        now: UnixTime,
    ) -> Result<OpenGroup, GroupError> {
        let message = MlsMessage::from_bytes(welcome).map_err(|_| GroupError::Malformed)?;
        let data =
            KeyPackageData::mls_decode(&mut &*secret).map_err(|_| GroupError::State("key package".into()))?;
        self.key_packages.lock().held.insert(reference.to_vec(), data);
        let tree = mls_rs::group::ExportedTree::from_bytes(tree).map_err(|_| GroupError::Malformed)?;
        let joined = self.client.join_group(Some(tree), &message, Some(time(now)));
        self.key_packages.lock().held.remove(reference);
        let (group, _info) = joined.map_err(|e| self.error(e, 0))?;
        let open = self.open(group)?;
        open.meta()?;
        Ok(open)
    }

    /// The accounts of the members in a ratchet tree (as sent beside a Welcome), to fetch
    /// their device lists before joining: mls-rs stops at the first leaf it cannot check.
    pub fn tree_accounts(tree: &[u8]) -> Result<Vec<tacit_protocol::AccountName>, GroupError> {
        let tree = mls_rs::group::ExportedTree::from_bytes(tree).map_err(|_| GroupError::Malformed)?;
        let mut out: Vec<tacit_protocol::AccountName> = tree
            .roster()
            .members()
            .iter()
            .filter_map(|m| MemberId::from_signing_identity(&m.signing_identity))
            .map(|m| m.address().account)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Loads a stored group.
    pub fn load(&self, stored: &StoredGroup, tree: &[u8]) -> Result<OpenGroup, GroupError> {
        let data = GroupData {
            state: Some(stored.state.clone()),
            epochs: stored.past_epochs.iter().map(|(e, d)| (*e, d.clone())).collect::<BTreeMap<_, _>>(),
        };
        self.states.put(&stored.group_id, data);
        let tree = Arc::new(tree.to_vec());
        let group = load(&self.client, &stored.group_id, &tree)?;
        Ok(OpenGroup {
            group,
            client: self.client.clone(),
            states: self.states.clone(),
            directory: self.directory.clone(),
            baseline: Some(Baseline { epoch: stored.epoch, tree }),
            journal: Vec::new(),
        })
    }
}

fn load(client: &Client<Config>, group_id: &[u8], tree: &[u8]) -> Result<Group<Config>, GroupError> {
    let tree = mls_rs::group::ExportedTree::from_bytes(tree).map_err(|e| GroupError::State(e.to_string()))?;
    client.load_group_with_ratchet_tree(group_id, tree).map_err(|e| GroupError::State(e.to_string()))
}

/// A loaded group.
pub struct OpenGroup {
    group: Group<Config>,
    client: Client<Config>,
    states: StateStore,
    directory: Directory,
    /// The state last written to `states` (at load, creation, join, [`Self::save`], or
    /// before the first message after an own operation), with its epoch's ratchet tree;
    /// `None` once an own operation changed the group since.
    baseline: Option<Baseline>,
    /// What happened since the baseline, in order, to replay after a refusal.
    journal: Vec<Step>,
}

/// One step of the journal.
enum Step {
    /// A message processed, as it came (parsed again only for a replay).
    Processed(Vec<u8>),
    /// A message encrypted: replayed by encrypting again, which moves the sending chain
    /// past the generation it used (the ciphertext itself is not needed).
    Encrypted,
}

struct Baseline {
    epoch: u64,
    tree: Arc<Vec<u8>>,
}

impl OpenGroup {
    /// The MLS group id.
    pub fn id(&self) -> &[u8] {
        self.group.group_id()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.current_epoch()
    }

    /// This device's leaf.
    pub fn own_leaf(&self) -> u32 {
        self.group.current_member_index()
    }

    /// The epoch authenticator (RFC 9420 §8.7): equal for every member in the same epoch
    /// of the same group, so comparing it shows the group did not fork.
    pub fn epoch_authenticator(&self) -> Result<Vec<u8>, GroupError> {
        self.group
            .epoch_authenticator()
            .map(|s| s.to_vec())
            .map_err(|e| GroupError::from_mls(e, Vec::new(), self.epoch()))
    }

    /// The members, by leaf.
    pub fn members(&self) -> BTreeMap<u32, MemberId> {
        self.group
            .roster()
            .members_iter()
            .filter_map(|m| MemberId::from_signing_identity(&m.signing_identity).map(|id| (m.index, id)))
            .collect()
    }

    /// The members of `accounts` whose leaf the directory no longer lists with its key: a
    /// device revoked since, or an account made again under the same name (a reinstall,
    /// a new identity). An account the directory holds no list of is left out.
    pub fn unlisted(&self, accounts: &[tacit_protocol::AccountName]) -> Vec<MemberId> {
        self.group
            .roster()
            .members_iter()
            .filter_map(|m| {
                let id = MemberId::from_signing_identity(&m.signing_identity)?;
                let stale = accounts.contains(&id.account)
                    && self.directory.has(&id.account)
                    && self.directory.lookup(&id, m.signing_identity.signature_key.as_bytes())
                        == crate::directory::Lookup::NotListed;
                stale.then_some(id)
            })
            .collect()
    }

    /// The group's metadata.
    pub fn meta(&self) -> Result<GroupMeta, GroupError> {
        let ext = self.group.context().extensions.get(META_EXTENSION).ok_or(GroupError::Malformed)?;
        Ok(GroupMeta::from_bytes(ext.extension_data())?)
    }

    fn error(&self, e: mls_rs::error::MlsError) -> GroupError {
        GroupError::from_mls(e, self.directory.take_missing(), self.epoch())
    }

    /// Encrypts application data (RFC 9420 §6.3).
    pub fn encrypt(&mut self, data: &[u8]) -> Result<Vec<u8>, GroupError> {
        if self.journal.len() >= MAX_JOURNAL {
            self.checkpoint()?;
        }
        let m = self.group.encrypt_application_message(data, Vec::new()).map_err(|e| self.error(e))?;
        self.journal.push(Step::Encrypted);
        m.to_bytes().map_err(|e| self.error(e))
    }

    /// A commit adding the devices of `key_packages` (`MLSMessage`s as uploaded),
    /// removing `remove`, and setting `meta` if given; always with an update path.
    pub fn commit(
        &mut self,
        key_packages: &[Vec<u8>],
        remove: &[MemberId],
        meta: Option<&GroupMeta>,
    ) -> Result<Commit, GroupError> {
        let members = self.members();
        let epoch = self.epoch();
        let extensions = meta.map(|meta| {
            let mut extensions = self.group.context().extensions.clone();
            extensions.set(meta.extension());
            extensions
        });
        let mut builder = self.group.commit_builder();
        for kp in key_packages {
            let message = MlsMessage::from_bytes(kp).map_err(|_| GroupError::Malformed)?;
            builder = builder.add_member(message).map_err(|e| GroupError::from_mls(e, Vec::new(), 0))?;
        }
        for who in remove {
            let leaf = members
                .iter()
                .find(|(_, m)| *m == who)
                .map(|(l, _)| *l)
                .ok_or_else(|| GroupError::NoSuchMember(who.clone()))?;
            builder = builder.remove_member(leaf).map_err(|e| GroupError::from_mls(e, Vec::new(), 0))?;
        }
        if let Some(extensions) = extensions {
            builder = builder
                .set_group_context_ext(extensions)
                .map_err(|e| GroupError::from_mls(e, Vec::new(), 0))?;
        }
        let output =
            builder.build().map_err(|e| GroupError::from_mls(e, self.directory.take_missing(), epoch))?;
        let commit = output.commit_message.to_bytes().map_err(|e| self.error(e))?;
        let welcome = match output.welcome_messages.first() {
            Some(w) => Some(w.to_bytes().map_err(|e| self.error(e))?),
            None => None,
        };
        let tree = match (&welcome, &output.ratchet_tree) {
            (Some(_), Some(t)) => Some(t.to_bytes().map_err(|e| self.error(e))?),
            _ => None,
        };
        Ok(Commit { commit, welcome, tree, epoch })
    }

    /// Moves to the epoch of this device's pending commit, once the server accepted it.
    pub fn merge_pending(&mut self) -> Result<CommitSummary, GroupError> {
        let before = self.members();
        let meta_before = self.meta()?;
        let own = self.group.current_member_signing_identity().ok().and_then(MemberId::from_signing_identity);
        self.baseline = None;
        let applied = self.group.apply_pending_commit().map_err(|e| self.error(e))?;
        let committer = own.ok_or(GroupError::BadCredential)?;
        let mut summary = self.summary(committer, &before, &meta_before, false)?;
        summary.set_rejoined(rejoined_by(&before, &applied.effect));
        Ok(summary)
    }

    /// A proposal (RFC 9420 §12.1.3) that removes this device, for the other members to
    /// commit: how a device leaves (a commit cannot remove its own sender, §12.2). The group
    /// is consumed: after it the device sends and reads nothing more of it.
    pub fn propose_leave(mut self) -> Result<Vec<u8>, GroupError> {
        let own = self.own_leaf();
        let m = self.group.propose_remove(own, Vec::new()).map_err(|e| self.error(e))?;
        m.to_bytes().map_err(|e| self.error(e))
    }

    /// Proposals were received that a commit must take in before this device may send
    /// (RFC 9420 §12.2): commit (with nothing of its own) first.
    pub fn commit_required(&self) -> bool {
        self.group.commit_required()
    }

    /// Drops this device's pending commit (another commit won the epoch).
    pub fn discard_pending(&mut self) {
        self.baseline = None;
        self.group.clear_pending_commit();
    }

    fn summary(
        &self,
        committer: MemberId,
        before: &BTreeMap<u32, MemberId>,
        meta_before: &GroupMeta,
        removed_me: bool,
    ) -> Result<CommitSummary, GroupError> {
        let after = self.members();
        let added = after.iter().filter(|(l, m)| before.get(l) != Some(m)).map(|(_, m)| m.clone()).collect();
        let removed =
            before.iter().filter(|(l, m)| after.get(l) != Some(m)).map(|(_, m)| m.clone()).collect();
        let meta = self.meta()?;
        let renamed = (meta != *meta_before).then_some(meta);
        Ok(CommitSummary {
            committer,
            epoch: self.epoch(),
            added,
            removed,
            rejoined: Vec::new(),
            renamed,
            removed_me,
        })
    }

    /// Processes a message of this group. On any error the group is as it was before.
    ///
    /// mls-rs advances its secret tree to a message's generation, using up that key,
    /// before the AEAD tag is checked, so a tampered copy would make the genuine message
    /// undecryptable (found by `tampered_and_foreign_messages_are_refused_and_change_nothing`).
    /// Checkpointing the state before every message costs more than the decryption
    /// (65 µs at 100 members, growing with the group), so instead the group keeps the
    /// messages processed (and encrypted) since its last written state, and after a refusal
    /// reloads that state and replays them: nothing on the path of a good message, one
    /// reload and a replay of at most [`MAX_JOURNAL`] steps after a bad one.
    pub fn process(&mut self, bytes: &[u8]) -> Result<Received, GroupError> {
        let message = MlsMessage::from_bytes(bytes).map_err(|_| GroupError::Malformed)?;
        if message.group_id().is_some_and(|g| g != self.id()) {
            return Err(GroupError::WrongGroup);
        }
        if self.baseline.is_none() || self.journal.len() >= MAX_JOURNAL {
            self.checkpoint()?;
        }
        match self.process_message(message) {
            Ok(received) => {
                self.journal.push(Step::Processed(bytes.to_vec()));
                Ok(received)
            }
            Err(e) => {
                self.restore()?;
                Err(e)
            }
        }
    }

    /// Writes the state to `states` and makes it the baseline.
    fn checkpoint(&mut self) -> Result<(), GroupError> {
        self.group.write_to_storage_without_ratchet_tree().map_err(|e| GroupError::State(e.to_string()))?;
        let epoch = self.epoch();
        let tree = match self.baseline.take() {
            Some(b) if b.epoch == epoch => b.tree,
            _ => Arc::new(self.tree()?),
        };
        self.baseline = Some(Baseline { epoch, tree });
        self.journal.clear();
        Ok(())
    }

    /// Back to the baseline, then the journal again.
    fn restore(&mut self) -> Result<(), GroupError> {
        let tree =
            self.baseline.as_ref().map(|b| b.tree.clone()).ok_or(GroupError::State("no baseline".into()))?;
        let id = self.id().to_vec();
        self.group = load(&self.client, &id, &tree)?;
        for step in std::mem::take(&mut self.journal) {
            let replayed = match &step {
                Step::Processed(bytes) => MlsMessage::from_bytes(bytes)
                    .and_then(|message| self.group.process_incoming_message(message))
                    .map(|_| ()),
                Step::Encrypted => self.group.encrypt_application_message(&[], Vec::new()).map(|_| ()),
            };
            replayed.map_err(|e| GroupError::State(e.to_string()))?;
            self.journal.push(step);
        }
        Ok(())
    }

    fn process_message(&mut self, message: MlsMessage) -> Result<Received, GroupError> {
        let epoch = message.epoch().unwrap_or(0);
        // The roster and metadata before a commit, to say what it changed; not taken for
        // application messages, whose cost must not grow with the group.
        let application = matches!(
            message.description(),
            MlsMessageDescription::PrivateProtocolMessage { content_type: ContentType::Application, .. }
        );
        let before = if application { None } else { Some((self.members(), self.meta()?)) };
        let received = self.group.process_incoming_message(message).map_err(|e| self.error(e))?;
        match (received, before) {
            (ReceivedMessage::ApplicationMessage(m), _) => {
                // A message of an earlier epoch is accepted only if the leaf still has
                // the signature key it had then (mls-rs), so the current leaf is its sender.
                let sender = self.member_at(m.sender_index)?;
                Ok(Received::Application { sender, leaf: m.sender_index, data: m.data().to_vec(), epoch })
            }
            (ReceivedMessage::Commit(c), Some((before, meta_before))) => {
                let committer = before.get(&c.committer).cloned().ok_or(GroupError::Unauthentic)?;
                let rejoined = rejoined_by(&before, &c.effect);
                if matches!(c.effect, mls_rs::group::CommitEffect::Removed { .. }) {
                    return Ok(Received::Commit(CommitSummary {
                        committer,
                        epoch: epoch.saturating_add(1),
                        added: Vec::new(),
                        removed: Vec::new(),
                        rejoined,
                        renamed: None,
                        removed_me: true,
                    }));
                }
                let mut summary = self.summary(committer, &before, &meta_before, false)?;
                summary.set_rejoined(rejoined);
                Ok(Received::Commit(summary))
            }
            (ReceivedMessage::Proposal(p), Some((before, _))) => match p.sender {
                mls_rs::group::ProposalSender::Member(i) => {
                    let sender = before.get(&i).cloned().ok_or(GroupError::Unauthentic)?;
                    Ok(Received::Proposal { sender })
                }
                _ => Err(GroupError::Unauthentic),
            },
            _ => Err(GroupError::Malformed),
        }
    }

    fn member_at(&self, leaf: u32) -> Result<MemberId, GroupError> {
        self.group
            .member_at_index(leaf)
            .and_then(|m| MemberId::from_signing_identity(&m.signing_identity))
            .ok_or(GroupError::Unauthentic)
    }

    /// The state to store (with [`Self::tree`] when the epoch changed); it becomes the
    /// state a refused message goes back to.
    pub fn save(&mut self) -> Result<StoredGroup, GroupError> {
        self.checkpoint()?;
        let id = self.id().to_vec();
        let data = self.states.take(&id).ok_or(GroupError::State("nothing written".into()))?;
        let stored = StoredGroup {
            group_id: id.clone(),
            epoch: self.epoch(),
            state: data.state.clone().ok_or(GroupError::State("no state written".into()))?,
            past_epochs: data.epochs.iter().map(|(e, d)| (*e, d.clone())).collect(),
        };
        self.states.put(&id, data);
        Ok(stored)
    }

    /// The public ratchet tree (RFC 9420 §12.4.3.3), stored beside the state.
    pub fn tree(&self) -> Result<Vec<u8>, GroupError> {
        self.group.export_tree().to_bytes().map_err(|e| GroupError::State(e.to_string()))
    }
}
