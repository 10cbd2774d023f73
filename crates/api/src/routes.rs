//! Routes (axum 0.8 path syntax). "auth" means `Authorization: Bearer <token>` from
//! [`AUTH_SESSION`].

/// `GET`: liveness; `200 ok` with no body.
pub const HEALTHZ: &str = "/healthz";
/// `POST` [`crate::CreateAccountRequest`] → [`crate::CreateAccountResponse`].
pub const ACCOUNTS: &str = "/v1/accounts";
/// `DELETE` (auth, own account): removes the account, its devices, keys and mailboxes.
pub const ACCOUNT: &str = "/v1/accounts/{name}";
/// `GET` → [`crate::DeviceListResponse`]: the account's signed device list.
/// `PUT` (auth, a device of this account) [`crate::PublishDeviceListRequest`] →
/// [`crate::DeviceListPublished`]: replaces it with a newer signed list (adding devices with
/// their prekeys, removing revoked ones with their keys, tokens and mailboxes; `409`
/// [`crate::ErrorCode::DeviceListConflict`] when it is not a valid successor).
pub const DEVICE_LIST: &str = "/v1/accounts/{name}/devices";
/// `GET` (no auth; optional query [`crate::RotationsQuery`]) → [`crate::RotationsResponse`]:
/// the account's key rotations, each the list signed by a new account key and the previous
/// key's signature over it, oldest first; a device restored from a copy older than a
/// rotation follows them from the key it holds to the current one.
pub const ROTATIONS: &str = "/v1/accounts/{name}/rotations";
/// `GET` (no auth) → [`crate::KtInfo`]: the key transparency directory's keys, namespace,
/// epoch interval and newest signed epoch.
pub const KT: &str = "/v1/kt";
/// `GET` (no auth) → [`crate::SignedRootWire`]: one signed epoch root (`404` unknown).
pub const KT_EPOCH: &str = "/v1/kt/epochs/{epoch}";
/// `PUT` (no auth: the body is signed) [`crate::KtCosignatureWire`] → `204`: an auditor's
/// cosignature of the epoch's root, from an auditor the server lists (`--kt-auditor`;
/// others `403`), verified before it is kept (`400` if it does not verify, `404` unknown
/// epoch). Served with the root from then on (`SignedRootWire::cosignatures`).
pub const KT_COSIGNATURES: &str = "/v1/kt/epochs/{epoch}/cosignatures";
/// `GET ?list-type=2[&continuation-token=E][&max-keys=N]` (no auth, no version header) →
/// XML: the audit blobs' names (`EPOCH/PREVIOUS/CURRENT`, [`KT_BLOB`]) as S3's
/// `ListObjectsV2` lists a bucket, at most 1,000 a page; the token is the epoch after the
/// page's last blob. For auditors of akd logs published in buckets (`tacit audit --log-dir
/// URL`). Without `list-type=2`: `404`.
pub const KT_BLOB_LISTING: &str = "/";
/// `GET` (no auth) → raw bytes: akd's append-only proof from the previous epoch to this one
/// (protobuf `SingleAppendOnlyProof`; `404` unknown).
pub const KT_AUDIT: &str = "/v1/kt/epochs/{epoch}/audit";
/// `GET` (no auth, no version header: for auditors such as plexi) → raw bytes: the
/// append-only proof from `previous` (hex root) to `current` (hex root), named as akd's
/// audit blobs are: `{epoch}` is the proof's start epoch (akd's `generate_audit_blobs`) or
/// its end epoch (plexi's `AuditBlobName`); both resolve. At the host root, as plexi fetches
/// it from a namespace's `log_directory`.
pub const KT_BLOB: &str = "/{epoch}/{previous}/{current}";
/// `GET` (no auth) → [`crate::KtProofResponse`]: an akd lookup proof of the account's
/// newest version in the newest signed epoch (`404` not in the directory yet).
pub const KT_LOOKUP: &str = "/v1/kt/lookup/{name}";
/// `GET` (no auth) → [`crate::KtProofResponse`]: an akd history proof of every version of
/// the account (`404` not in the directory yet).
pub const KT_HISTORY: &str = "/v1/kt/history/{name}";
/// `GET` (auth) → [`crate::DeviceStatusResponse`]: when each device of the caller's own
/// account was added and last seen by the server.
pub const DEVICES: &str = "/v1/devices";
/// `DELETE` (auth, only the device itself: logging out): deletes the device's keys,
/// tokens and mailbox and takes no more envelopes for it; sends need no envelope for it
/// (and one for it is `extra`) even while the signed list, which only the account key
/// changes, still names it.
pub const DEVICE: &str = "/v1/devices/{device}";
/// `POST` [`crate::LinkOfferRequest`] → [`crate::LinkOfferResponse`] (no auth; limited per
/// address): a new device publishes its link offer under a slot id derived from its link
/// secret. `409` [`crate::ErrorCode::AlreadyUsed`] if the slot exists.
pub const LINK: &str = "/v1/link";
/// `GET` (no auth) → [`crate::LinkOfferResponse`] (`404` unknown or expired, `409`
/// [`crate::ErrorCode::AlreadyUsed`] answered); `DELETE` (no auth): the new device is done
/// with the slot. The slot id is hex (32 characters).
pub const LINK_SLOT: &str = "/v1/link/{slot}";
/// `PUT` (auth) [`crate::LinkAnswerRequest`]: the approving device's sealed answer, once
/// (`409` [`crate::ErrorCode::AlreadyUsed`] after); `GET` (no auth, optional query
/// [`crate::LinkWaitQuery`]) → [`crate::LinkAnswerResponse`], or `204` when no answer came
/// within the wait.
pub const LINK_ANSWER: &str = "/v1/link/{slot}/answer";
/// `POST` (auth) [`crate::CreateBlobRequest`] → [`crate::BlobStatus`]: a ciphertext blob of
/// a declared size, readable by the devices of the same account (history transfer).
pub const BLOBS: &str = "/v1/blobs";
/// `PUT` (auth, same account; query [`crate::BlobOffset`]; body raw bytes, at most
/// [`crate::limits::MAX_BLOB_CHUNK_BYTES`]) → [`crate::BlobStatus`]: appends at `offset`,
/// which must equal the bytes received so far (else `409` with the status as message);
/// `GET` (auth, same account; query [`crate::BlobRange`]) → raw bytes, once complete;
/// `DELETE` (auth, same account).
pub const BLOB: &str = "/v1/blobs/{id}";
/// `GET` (auth, same account) → [`crate::BlobStatus`]: how much has been uploaded (resume).
pub const BLOB_STATUS: &str = "/v1/blobs/{id}/status";
/// `POST` [`crate::ChallengeRequest`] → [`crate::ChallengeResponse`].
pub const AUTH_CHALLENGE: &str = "/v1/auth/challenge";
/// `POST` [`crate::SessionRequest`] → [`crate::SessionResponse`].
pub const AUTH_SESSION: &str = "/v1/auth/session";
/// `PUT` (auth) [`crate::PrekeyUploadRequest`] → [`crate::PrekeyStatus`];
/// `GET` (auth) → [`crate::PrekeyStatus`] of the caller's device.
pub const PREKEYS: &str = "/v1/keys";
/// `GET` (auth) → [`crate::BundleResponse`]: hands out one-time keys exactly once.
pub const BUNDLE: &str = "/v1/keys/{name}/{device}";
/// `PUT` (auth) [`crate::KeyPackageUpload`] → [`crate::KeyPackageStatus`];
/// `GET` (auth) → [`crate::KeyPackageStatus`] of the caller's device. MLS KeyPackages for
/// groups (issue 11), opaque to the server.
pub const KEY_PACKAGES: &str = "/v1/key-packages";
/// `GET` (auth) → [`crate::KeyPackageResponse`]: one of the device's KeyPackages, handed
/// out once (the last-resort one when none is left, and then not removed); `404` when the
/// device has none.
pub const KEY_PACKAGE: &str = "/v1/key-packages/{name}/{device}";
/// `POST` (auth) [`crate::KeyPackageClaim`] → [`crate::KeyPackageClaimResponse`]: one
/// KeyPackage of each device named (at most [`crate::limits::MAX_KEY_PACKAGE_CLAIM`]), each
/// handed out as by [`KEY_PACKAGE`]; the devices count against the claimer's
/// [`crate::limits::KEY_PACKAGE_CLAIMS_PER_HOUR`].
pub const KEY_PACKAGE_CLAIM: &str = "/v1/key-packages/claim";
/// `GET` (auth, a member device) → [`crate::GroupStatus`]: the group's epoch and member
/// devices as the relay keeps them (`404` for a device that is not a member). Groups are
/// MLS groups (issue 11); `{group}` is the MLS group id in hex (1 to
/// [`crate::limits::MAX_GROUP_ID_BYTES`] bytes).
pub const GROUP: &str = "/v1/groups/{group}";
/// `POST` (auth) [`crate::GroupCommitRequest`] → [`crate::SendResponse`]: the group's next
/// commit. The first commit for an epoch wins: a commit made in another epoch than the
/// group's is refused (`409` [`crate::GroupEpochConflict`] with the group's epoch). A commit
/// in epoch 0 for a group the relay does not know creates it. The commit goes to every
/// member device but the sender (those it removes included), the Welcome only to the devices
/// it adds, both stored once.
pub const GROUP_COMMITS: &str = "/v1/groups/{group}/commits";
/// `POST` (auth, a member device) [`crate::GroupMessageRequest`] → [`crate::SendResponse`]:
/// an application message or proposal of the group's current epoch (else `409`
/// [`crate::GroupEpochConflict`]), stored once and referenced from every other member
/// device's mailbox.
pub const GROUP_MESSAGES: &str = "/v1/groups/{group}/messages";
/// `DELETE` (auth, a member device) → `204`: the caller's device leaves the group's
/// delivery (it gets nothing more of it); its self-removal proposal goes first, over
/// [`GROUP_MESSAGES`], for the others to commit.
pub const GROUP_MEMBERSHIP: &str = "/v1/groups/{group}/membership";
/// `POST` (auth) [`crate::SendRequest`] → [`crate::SendResponse`] (or `409`
/// [`crate::MismatchedDevices`], `410` [`crate::StaleDevices`]);
/// `GET` (auth, optional query [`crate::FetchQuery`]: `?after=ID`) → [`crate::FetchResponse`]:
/// pending envelopes with ids above `after`, oldest first.
pub const MESSAGES: &str = "/v1/messages";
/// `POST` (auth) [`crate::AckRequest`]: deletes acknowledged envelopes.
pub const ACK: &str = "/v1/messages/ack";
/// `GET` (auth) WebSocket upgrade: [`crate::ServerFrame`]s down, [`crate::ClientFrame`]s up.
pub const WEBSOCKET: &str = "/v1/ws";
