//! Typed errors: every refusal says what was wrong, and nothing stored changes.

use mls_rs::error::MlsError;
use tacit_protocol::AccountName;

use crate::identity::IdentityError;
use crate::member::MemberId;
use crate::meta::MetaError;

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Leaves of these accounts were met whose device lists are not in the directory:
    /// verify and insert them, then try again (nothing changed).
    #[error("the device lists of {} are needed first", names(.0))]
    NeedDeviceLists(Vec<AccountName>),
    /// A leaf whose device is not in its account's verified list with its key.
    #[error("{0} is not in its account's verified device list with this key")]
    NotInDeviceList(MemberId),
    /// A credential that is not a Tacit account and device.
    #[error("a member credential that is not a Tacit account and device")]
    BadCredential,
    /// A message for another epoch than the group's (a stale or future commit).
    #[error("the message is for another epoch than the group's (epoch {current})")]
    WrongEpoch {
        /// The group's epoch.
        current: u64,
    },
    /// A message for an epoch no longer kept.
    #[error("the message is from an epoch no longer kept")]
    EpochGone,
    /// A message of another group.
    #[error("the message is for another group")]
    WrongGroup,
    /// Forged, tampered with, or from someone who is not a member.
    #[error("the message does not authenticate (tampered with, forged, or not from a member)")]
    Unauthentic,
    /// A message whose key was used already (a replay) or deleted.
    #[error("the message was already received (its key is gone)")]
    Replayed,
    /// A message from an earlier epoch whose sender has left the group since: mls-rs keeps
    /// no credentials of past epochs, so it cannot say who sent it, and refuses it rather
    /// than show it under the wrong name.
    #[error("a late message from a device that has left the group since")]
    SenderGone,
    /// A message this device sent itself.
    #[error("the message is this device's own")]
    OwnMessage,
    /// A Welcome that is for none of this device's key packages.
    #[error("the Welcome is not for this device (or its key package is gone)")]
    WelcomeNotForUs,
    /// This device is not in the group (it was removed).
    #[error("this device is not a member of the group")]
    NotMember,
    /// A member named that is not in the group.
    #[error("{0} is not a member of the group")]
    NoSuchMember(MemberId),
    /// Proposals are pending: a commit must come first.
    #[error("a commit is needed before sending")]
    CommitRequired,
    /// Bytes that are not an MLS message of the expected kind.
    #[error("malformed MLS message")]
    Malformed,
    /// Group metadata refused.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Stored group state that does not load.
    #[error("stored group state does not load: {0}")]
    State(String),
    /// Any other refusal of the MLS library, with its words.
    #[error("MLS: {0}")]
    Mls(String),
}

fn names(a: &[AccountName]) -> String {
    a.iter().map(AccountName::as_str).collect::<Vec<_>>().join(", ")
}

impl GroupError {
    /// Maps a library error; `missing` is what the directory recorded as asked for and
    /// not held during the failed operation.
    pub(crate) fn from_mls(e: MlsError, missing: Vec<AccountName>, epoch: u64) -> Self {
        if let MlsError::IdentityProviderError(inner) = &e
            && let Some(id) = inner.inner_dyn_error().downcast_ref::<IdentityError>()
        {
            return match id {
                IdentityError::UnknownAccount(a) => {
                    let mut missing = missing;
                    if !missing.contains(a) {
                        missing.push(a.clone());
                    }
                    missing.sort();
                    GroupError::NeedDeviceLists(missing)
                }
                IdentityError::NotListed(m) => GroupError::NotInDeviceList(m.clone()),
                IdentityError::BadCredential | IdentityError::ExternalSender => GroupError::BadCredential,
            };
        }
        match e {
            MlsError::InvalidEpoch => GroupError::WrongEpoch { current: epoch },
            MlsError::EpochNotFound => GroupError::EpochGone,
            MlsError::GroupIdMismatch => GroupError::WrongGroup,
            MlsError::InvalidSignature
            | MlsError::InvalidMembershipTag
            | MlsError::InvalidConfirmationTag
            | MlsError::CryptoProviderError(_)
            | MlsError::InvalidSender
            | MlsError::MembershipTagForNonMember
            | MlsError::LeafNotFound(_)
            | MlsError::TreeHashMismatch
            | MlsError::ParentHashMismatch
            | MlsError::InvalidFutureGeneration(_) => GroupError::Unauthentic,
            MlsError::KeyMissing(_) => GroupError::Replayed,
            MlsError::MemberNotFound => GroupError::SenderGone,
            MlsError::CantProcessMessageFromSelf => GroupError::OwnMessage,
            MlsError::WelcomeKeyPackageNotFound => GroupError::WelcomeNotForUs,
            MlsError::CommitRequired => GroupError::CommitRequired,
            MlsError::SerializationError(_) | MlsError::UnexpectedMessageType => GroupError::Malformed,
            other => GroupError::Mls(other.to_string()),
        }
    }
}
