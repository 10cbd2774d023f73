//! Request, response and frame bodies (JSON).

use serde::{Deserialize, Serialize};

use crate::Bytes;

/// Creates an account with its first device (device 1), from public keys only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAccountRequest {
    /// The account name (3 to 32 of `a-z 0-9 . _ -`).
    pub name: String,
    /// The account identity key (Ed25519, 32 bytes).
    pub account_key: Bytes,
    /// The account-signed device list naming exactly device 1.
    pub device_list: Bytes,
    /// Required when the server was started with a registration token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_token: Option<String>,
    /// The first device's prekeys.
    pub prekeys: PrekeyUploadRequest,
}

/// The created account's first device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAccountResponse {
    /// Always 1 for a new account.
    pub device: u32,
}

/// Asks for a single-use challenge to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRequest {
    /// The account.
    pub account: String,
    /// The device that will sign.
    pub device: u32,
}

/// A challenge, valid for [`crate::limits::CHALLENGE_TTL_SECS`] and one use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    /// 32 random bytes.
    pub challenge: Bytes,
    /// The origin the server signs for (part of [`crate::auth_message`]).
    pub origin: String,
}

/// Proves possession of the device signing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// The account.
    pub account: String,
    /// The device.
    pub device: u32,
    /// The challenge being answered.
    pub challenge: Bytes,
    /// Ed25519 signature by the device signing key over [`crate::auth_message`].
    pub signature: Bytes,
}

/// A bearer token for the authenticated device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// The token (random; the server stores only its hash).
    pub token: String,
    /// Seconds until it expires.
    pub expires_in_secs: u64,
    /// The largest [state counter](crate#state-counter) this device has reported (0 if none).
    /// A client whose own counter is below it runs on a copy of its data older than what
    /// it has already shown the world (a restored backup). Absent from a server that does
    /// not keep the counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_counter: Option<u64>,
}

impl core::fmt::Debug for SessionResponse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionResponse")
            .field("token", &"***")
            .field("expires_in_secs", &self.expires_in_secs)
            .field("state_counter", &self.state_counter)
            .finish()
    }
}

/// Public prekeys to publish, each in `tacit-protocol`'s encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyUploadRequest {
    /// A new signed X25519 prekey (`SignedPrekeyPublic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_prekey: Option<Bytes>,
    /// A new last-resort ML-KEM prekey (`KemPrekeyPublic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<Bytes>,
    /// New one-time X25519 prekeys (`OneTimePrekeyPublic`).
    #[serde(default)]
    pub one_time: Vec<Bytes>,
    /// New one-time ML-KEM prekeys (`KemPrekeyPublic`).
    #[serde(default)]
    pub kem_one_time: Vec<Bytes>,
    /// When present, this upload names the device's whole one-time X25519 set: afterwards
    /// the server holds only the keys with these ids (those it still has) and the ones in
    /// `one_time`; every other one-time X25519 key of the device is deleted. A client sends
    /// it on every upload (in every part of a split upload) so that keys whose private
    /// halves it no longer has are never handed out. At most
    /// [`crate::limits::MAX_STORED_PREKEYS`] ids. Absent: the upload only adds (and
    /// replaces keys with the same id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_ids: Option<Vec<u32>>,
    /// `one_time_ids` for the one-time ML-KEM prekeys (`kem_one_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_one_time_ids: Option<Vec<u32>>,
    /// The device's [state counter](crate#state-counter) once these keys were stored on
    /// the device (ignored in an account creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_counter: Option<u64>,
}

/// How many one-time keys the server still holds for the caller's device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrekeyStatus {
    /// One-time X25519 prekeys left.
    pub one_time: u32,
    /// One-time ML-KEM prekeys left.
    pub kem_one_time: u32,
    /// Either count is below [`crate::limits::LOW_PREKEY_WATER`]: refill.
    pub low: bool,
}

/// `PUT /v1/key-packages`: MLS KeyPackages (`MLSMessage` encodings) for groups. They add
/// to what the server holds, up to [`crate::limits::MAX_STORED_KEY_PACKAGES`]; a
/// last-resort KeyPackage replaces the one held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageUpload {
    /// KeyPackages handed out once each, at most
    /// [`crate::limits::MAX_KEY_PACKAGES_PER_UPLOAD`], each at most
    /// [`crate::limits::MAX_KEY_PACKAGE_BYTES`].
    #[serde(default)]
    pub key_packages: Vec<Bytes>,
    /// The KeyPackage handed out when none of the others is left (and then kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<Bytes>,
}

/// How many KeyPackages the server holds for the caller's device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageStatus {
    /// KeyPackages left, besides the last-resort one.
    pub available: u32,
    /// A last-resort KeyPackage is held.
    pub last_resort: bool,
    /// Fewer than [`crate::limits::LOW_KEY_PACKAGE_WATER`] left, or no last resort: refill.
    pub low: bool,
}

/// One device's KeyPackage, for adding it to a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageResponse {
    /// The KeyPackage (`MLSMessage` encoding), as the device uploaded it.
    pub key_package: Bytes,
    /// It is the device's last-resort KeyPackage (the others are used up).
    pub last_resort: bool,
}

/// `POST /v1/key-packages/claim`: the devices whose KeyPackages a device adding them to a
/// group needs, each named once, at most [`crate::limits::MAX_KEY_PACKAGE_CLAIM`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageClaim {
    /// The devices.
    pub devices: Vec<GroupMember>,
}

/// One KeyPackage per device claimed, in the claim's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageClaimResponse {
    /// Per device, as it was named.
    pub key_packages: Vec<ClaimedKeyPackage>,
}

/// One device's answer in a [`KeyPackageClaimResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// The device's account.
    pub account: String,
    /// The device.
    pub device: u32,
    /// Its KeyPackage, handed out once (or the last-resort one); absent when the device has
    /// none, or no such device is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_package: Option<Bytes>,
    /// It is the device's last-resort KeyPackage.
    #[serde(default)]
    pub last_resort: bool,
}

/// One member device of a group, as the relay keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupMember {
    /// Its account.
    pub account: String,
    /// The device.
    pub device: u32,
}

/// `POST /v1/groups/{group}/commits`: an MLS commit (`MLSMessage`, a `PrivateMessage` of
/// content type commit for this group; its epoch is read from it) and what it changes in
/// delivery. The relay cannot read the commit: the lists say whom to deliver to, and the
/// members check the commit itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommitRequest {
    /// The commit.
    pub commit: Bytes,
    /// The Welcome for the devices added (with what they need beside it, as the client
    /// encodes it); required exactly when `added` is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<Bytes>,
    /// Devices the commit adds (they get the Welcome, and from then on the group's traffic).
    #[serde(default)]
    pub added: Vec<GroupMember>,
    /// Devices the commit removes (they get this commit, then nothing more of the group).
    #[serde(default)]
    pub removed: Vec<GroupMember>,
    /// As [`SendRequest::idempotency_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Bytes>,
    /// As [`SendRequest::state_counter`] (a commit changes the sender's group state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_counter: Option<u64>,
}

/// `POST /v1/groups/{group}/messages`: an MLS application message or proposal
/// (`MLSMessage`, a `PrivateMessage` of this group, at most
/// [`crate::limits::MAX_ENVELOPE_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessageRequest {
    /// The message.
    pub content: Bytes,
    /// As [`SendRequest::idempotency_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Bytes>,
    /// As [`SendRequest::state_counter`] (encrypting uses up a message key of the sender's
    /// group state: a copy from before must be found out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_counter: Option<u64>,
}

/// `409`: a group commit or message made in another epoch than the group's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEpochConflict {
    /// Always [`crate::ErrorCode::StaleEpoch`].
    pub code: crate::ErrorCode,
    /// The group's epoch at the relay.
    pub epoch: u64,
}

/// A group as the relay keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The epoch its last commit entered.
    pub epoch: u64,
    /// Its member devices.
    pub members: Vec<GroupMember>,
}

/// What a group envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// A commit ([`GroupCommitRequest::commit`]).
    Commit,
    /// A Welcome ([`GroupCommitRequest::welcome`]) to this device.
    Welcome,
    /// An application message or proposal ([`GroupMessageRequest::content`]).
    Message,
}

/// The group part of an envelope: what the relay checked before storing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDelivery {
    /// The MLS group id.
    pub id: Bytes,
    /// What the content is.
    pub kind: GroupKind,
    /// The epoch the message was made in (a Welcome: the epoch it joins).
    pub epoch: u64,
}

/// One device's prekey bundle (`PrekeyBundle` encoding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleResponse {
    /// The bundle; its one-time keys were removed from the server when handed out.
    pub bundle: Bytes,
}

/// An account's signed device list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceListResponse {
    /// `DeviceList` encoding, signed by the account key.
    pub device_list: Bytes,
}

/// The query of `GET` [`crate::ROTATIONS`] (`?after=VERSION`, optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationsQuery {
    /// Only rotations to a list of a larger version (0, the default: from the first).
    #[serde(default)]
    pub after: u64,
}

/// One account key rotation as the server accepted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The `DeviceList` encoding signed by the new key.
    pub device_list: Bytes,
    /// The previous key's signature over `device_list` (see
    /// [`PublishDeviceListRequest::rotation_signature`]).
    pub rotation_signature: Bytes,
}

/// A signed epoch root of the key transparency directory (plexi's `SignatureMessage` fields
/// and the Ed25519 signature over its protobuf encoding).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRootWire {
    /// The log's name.
    pub namespace: String,
    /// When it was signed, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The epoch.
    pub epoch: u64,
    /// The akd root hash (32 bytes).
    pub root: Bytes,
    /// Ed25519 signature (64 bytes).
    pub signature: Bytes,
    /// Auditors' cosignatures of this root, at most [`crate::limits::MAX_KT_AUDITORS`]
    /// (absent from servers before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosignatures: Vec<KtCosignatureWire>,
}

/// An auditor's cosignature of an epoch root: plexi's `SignatureMessage` (the root's
/// namespace, epoch and digest, the auditor's own timestamp) signed with the auditor's
/// Ed25519 key, as `tacit audit --cosign` makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtCosignatureWire {
    /// The auditor's Ed25519 public key (32 bytes).
    pub auditor: Bytes,
    /// When the auditor signed, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The signature (64 bytes).
    pub signature: Bytes,
}

/// `GET` [`crate::KT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtInfo {
    /// The log's name (plexi's namespace) in every signed root.
    pub namespace: String,
    /// The Ed25519 key epoch roots are signed with (32 bytes); clients pin it.
    pub public_key: Bytes,
    /// The VRF public key lookup proofs verify under (32 bytes).
    pub vrf_public_key: Bytes,
    /// Epochs publish at most this often.
    pub epoch_interval_ms: u64,
    /// The newest signed epoch, if any.
    pub latest: Option<SignedRootWire>,
}

/// `GET` [`crate::KT_LOOKUP`] and [`crate::KT_HISTORY`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KtProofResponse {
    /// akd's protobuf encoding of the proof.
    pub proof: Bytes,
    /// The signed epoch it verifies against.
    pub root: SignedRootWire,
    /// Lookups only: the account has a change waiting for the next epoch (read after the
    /// proof, before any later epoch): a device its proven list lacks may be in that change.
    /// The server's word, used only to hold a message instead of dropping it.
    #[serde(default)]
    pub pending: bool,
}

/// An account's key rotations, oldest first, at most
/// [`crate::limits::MAX_ROTATIONS_PER_PAGE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationsResponse {
    /// The rotations after the query's version.
    pub rotations: Vec<Rotation>,
    /// More follow: ask again after the last one's version.
    pub more: bool,
}

/// Publishes a newer signed device list of the caller's own account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishDeviceListRequest {
    /// `DeviceList` encoding: a version above the stored one, every device id it adds above
    /// any id the account ever used (ids are never reused).
    pub device_list: Bytes,
    /// When the list is signed by a new account key (a revoked approver's key is rotated
    /// away): the previous account key's Ed25519 signature over `device_list`, so only a
    /// holder of the current key can rotate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_signature: Option<Bytes>,
    /// The public prekeys of every device the list adds (signed and last-resort prekeys
    /// required), so a new device can be reached from the moment it is listed.
    #[serde(default)]
    pub new_devices: Vec<NewDevicePrekeys>,
}

/// A device added by a [`PublishDeviceListRequest`] and its first prekeys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevicePrekeys {
    /// The device's id in the list.
    pub device: u32,
    /// Its prekeys, signed by its identity in the list.
    pub prekeys: PrekeyUploadRequest,
}

/// The list was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceListPublished {
    /// Its version.
    pub version: u64,
}

/// What the server knows of the caller's own devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatusResponse {
    /// One per device of the current list.
    pub devices: Vec<DeviceStatus>,
    /// The largest device id the account ever used (a new device takes a larger one).
    #[serde(default)]
    pub max_device_id: u32,
}

/// One device as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The device id.
    pub device: u32,
    /// When the server first stored it, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it last authenticated (to the minute), or never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// It logged itself out ([`crate::DEVICE`]) and takes no envelopes.
    #[serde(default)]
    pub logged_out: bool,
}

/// A new device's link offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOfferRequest {
    /// 16 bytes derived from the link secret (the server never sees the secret).
    pub slot: Bytes,
    /// The offer (`tacit-protocol` link offer encoding), at most
    /// [`crate::limits::MAX_LINK_MESSAGE_BYTES`].
    pub offer: Bytes,
}

/// A stored link offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOfferResponse {
    /// The offer as published.
    pub offer: Bytes,
    /// Seconds until the slot expires.
    pub expires_in_secs: u64,
}

/// The approving device's sealed answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAnswerRequest {
    /// The sealed provisioning message, at most [`crate::limits::MAX_LINK_MESSAGE_BYTES`].
    pub answer: Bytes,
}

/// The query of `GET` [`crate::LINK_ANSWER`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkWaitQuery {
    /// Seconds to wait for the answer (0 to [`crate::limits::MAX_LINK_WAIT_SECS`]).
    #[serde(default)]
    pub wait_secs: u64,
}

/// The answer, once given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAnswerResponse {
    /// The sealed provisioning message.
    pub answer: Bytes,
}

/// Creates a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateBlobRequest {
    /// Its total size in bytes (1 to [`crate::limits::MAX_BLOB_BYTES`]).
    pub size: u64,
}

/// A blob's upload progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStatus {
    /// The blob id (32 hex characters).
    pub id: String,
    /// Declared size.
    pub size: u64,
    /// Bytes received so far (the offset of the next upload).
    pub received: u64,
    /// Seconds until the blob is deleted.
    pub expires_in_secs: u64,
}

/// The query of `PUT` [`crate::BLOB`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobOffset {
    /// Where this chunk goes.
    pub offset: u64,
}

/// The query of `GET` [`crate::BLOB`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRange {
    /// First byte.
    #[serde(default)]
    pub offset: u64,
    /// Bytes wanted (at most [`crate::limits::MAX_BLOB_CHUNK_BYTES`]; fewer at the end).
    pub len: u64,
}

/// One ciphertext for one recipient device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingEnvelope {
    /// The recipient device.
    pub device: u32,
    /// End-to-end ciphertext (a `tacit-protocol` message).
    pub content: Bytes,
}

/// Sends one message to every device of `recipient`. A device sending to its own account
/// (a copy of what it sent for its other devices, a note to self) covers every current
/// device of the account except itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The recipient account.
    pub recipient: String,
    /// One envelope per current device of the recipient (devices that logged out excepted).
    pub envelopes: Vec<OutgoingEnvelope>,
    /// [`crate::limits::IDEMPOTENCY_KEY_BYTES`] random bytes naming this message, reused
    /// on every retry of it: a send whose key the server stored for the sending device
    /// within [`crate::limits::IDEMPOTENCY_TTL_SECS`] is answered as the first one was
    /// (same `server_time_ms`) and stores nothing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Bytes>,
    /// The sending device's [state counter](crate#state-counter) once it stored the
    /// sessions these envelopes advanced; recorded with the envelopes, in the same
    /// transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_counter: Option<u64>,
}

/// The message is durably stored in every recipient mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

/// `409`: the envelopes do not cover exactly the recipient's current devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchedDevices {
    /// Always [`crate::ErrorCode::MismatchedDevices`].
    pub code: crate::ErrorCode,
    /// Current devices with no envelope.
    pub missing: Vec<u32>,
    /// Envelopes for devices that do not exist.
    pub extra: Vec<u32>,
}

/// `410`: devices that were re-registered since the sender's session began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleDevices {
    /// Always [`crate::ErrorCode::StaleDevices`].
    pub code: crate::ErrorCode,
    /// The re-registered devices.
    pub stale: Vec<u32>,
}

/// A stored message for the fetching device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Mailbox-unique id, used to acknowledge.
    pub id: u64,
    /// Sender account (as authenticated by the server).
    pub sender: String,
    /// Sender device.
    pub sender_device: u32,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// End-to-end ciphertext.
    pub content: Bytes,
    /// For a group's envelope: which group, and what it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupDelivery>,
}

/// The query of `GET /v1/messages` (`?after=ID`, optional): a cursor, so a client that
/// holds some envelopes back (not acknowledged) pages past them to the ones behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchQuery {
    /// Only envelopes with a larger id (0, the default: from the oldest). A client passes the
    /// largest id of the page it just processed.
    #[serde(default)]
    pub after: u64,
}

/// Pending envelopes, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// At most [`crate::limits::MAX_FETCH`] envelopes.
    pub envelopes: Vec<Envelope>,
    /// More are waiting (with ids above the last one here: fetch again with it as `after`).
    pub more: bool,
}

/// Deletes delivered envelopes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    /// Envelope ids.
    pub ids: Vec<u64>,
    /// The device's [state counter](crate#state-counter) once it stored what these
    /// envelopes carried; recorded in the transaction that deletes them (not at all when
    /// none of them was still stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_counter: Option<u64>,
}

/// Server-to-client WebSocket frames (JSON text frames).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A stored envelope; it stays stored until acknowledged.
    Envelope(Envelope),
    /// Everything stored at connection time has been sent.
    Drained,
    /// The send with this request id is stored durably in every recipient mailbox (the
    /// WebSocket form of `200` to `POST /v1/messages`).
    Sent {
        /// The client's request id.
        id: u64,
        /// When the server accepted it, milliseconds since the Unix epoch.
        server_time_ms: u64,
    },
    /// The send with this request id was refused; nothing of it was stored. `code` and
    /// `message` are those `POST /v1/messages` answers; for `mismatched_devices`, `missing`
    /// and `extra` name the devices.
    SendFailed {
        /// The client's request id.
        id: u64,
        /// Stable error code.
        code: crate::ErrorCode,
        /// Short human-readable explanation.
        message: String,
        /// Current devices with no envelope (`mismatched_devices` only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        missing: Vec<u32>,
        /// Envelopes for devices that do not exist (`mismatched_devices` only).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extra: Vec<u32>,
    },
    /// This device is running low on one-time prekeys (fewer than
    /// [`crate::limits::LOW_PREKEY_WATER`] of either kind, as `GET /v1/keys` would say):
    /// upload more. Sent when a bundle fetch leaves it low.
    PrekeysLow {
        /// One-time X25519 prekeys left.
        one_time: u32,
        /// One-time ML-KEM prekeys left.
        kem_one_time: u32,
    },
}

/// Client-to-server WebSocket frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The client stored these envelopes durably: the server may delete them.
    Ack {
        /// Envelope ids.
        ids: Vec<u64>,
        /// As [`AckRequest::state_counter`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_counter: Option<u64>,
    },
    /// A send over the socket, answered by [`ServerFrame::Sent`] or
    /// [`ServerFrame::SendFailed`] with the same `id`. The same rules, limits and
    /// durability as `POST /v1/messages`; sends on one socket may be answered out of order.
    Send {
        /// The client's request id, echoed in the answer.
        id: u64,
        /// Recipient account name.
        recipient: String,
        /// One envelope per recipient device.
        envelopes: Vec<OutgoingEnvelope>,
        /// As [`SendRequest::idempotency_key`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<Bytes>,
        /// As [`SendRequest::state_counter`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_counter: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_bytes_round_trip() {
        let f = ServerFrame::Envelope(Envelope {
            id: 7,
            sender: "alice".into(),
            sender_device: 1,
            server_time_ms: 1,
            content: Bytes(vec![0, 255, 1]),
            group: None,
        });
        let j = serde_json::to_string(&f).unwrap();
        assert!(j.contains("\"type\":\"envelope\"") && j.contains("\"content\":\"AP8B\""), "{j}");
        assert_eq!(serde_json::from_str::<ServerFrame>(&j).unwrap(), f);
        let a: ClientFrame = serde_json::from_str(r#"{"type":"ack","ids":[1,2]}"#).unwrap();
        assert_eq!(a, ClientFrame::Ack { ids: vec![1, 2], state_counter: None });
        let a: ClientFrame = serde_json::from_str(r#"{"type":"ack","ids":[1],"state_counter":7}"#).unwrap();
        assert_eq!(a, ClientFrame::Ack { ids: vec![1], state_counter: Some(7) });
        let s: ClientFrame = serde_json::from_str(
            r#"{"type":"send","id":9,"recipient":"bob","envelopes":[{"device":1,"content":"AA"}]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            ClientFrame::Send {
                id: 9,
                recipient: "bob".into(),
                envelopes: vec![OutgoingEnvelope { device: 1, content: Bytes(vec![0]) }],
                idempotency_key: None,
                state_counter: None,
            }
        );
        let ok = serde_json::to_string(&ServerFrame::Sent { id: 9, server_time_ms: 5 }).unwrap();
        assert_eq!(ok, r#"{"type":"sent","id":9,"server_time_ms":5}"#);
        let failed = ServerFrame::SendFailed {
            id: 9,
            code: crate::ErrorCode::RateLimited,
            message: "m".into(),
            missing: vec![],
            extra: vec![],
        };
        let j = serde_json::to_string(&failed).unwrap();
        assert_eq!(j, r#"{"type":"send_failed","id":9,"code":"rate_limited","message":"m"}"#);
        assert_eq!(serde_json::from_str::<ServerFrame>(&j).unwrap(), failed);
        assert!(serde_json::from_str::<Bytes>("\"***\"").is_err());
    }
}
