//! The MLS identity provider: a leaf is valid when its account's verified device list
//! has its device with its signature key (see [`crate::directory`]).

use mls_rs::ExtensionList;
use mls_rs::IdentityProvider;
use mls_rs::error::IntoAnyError;
use mls_rs::time::MlsTime;
use mls_rs_core::identity::{CredentialType, MemberValidationContext, SigningIdentity};
use tacit_protocol::AccountName;

use crate::directory::{Directory, Lookup};
use crate::member::MemberId;

/// Why a leaf was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The credential is not a Tacit credential.
    #[error("a member credential that is not a Tacit account and device")]
    BadCredential,
    /// No list of the account is held: fetch and verify it, then try again.
    #[error("the device list of {} is needed", .0.as_str())]
    UnknownAccount(AccountName),
    /// The device is not in its account's list with this key.
    #[error("{0} is not in its account's verified device list with this key")]
    NotListed(MemberId),
    /// Tacit groups have no external senders.
    #[error("external senders are not allowed in Tacit groups")]
    ExternalSender,
}

impl IntoAnyError for IdentityError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(self.into())
    }
}

/// Checks leaves against a [`Directory`].
#[derive(Clone)]
pub struct TacitIdentity {
    directory: Directory,
}

impl TacitIdentity {
    /// A provider over `directory`.
    pub fn new(directory: Directory) -> Self {
        Self { directory }
    }

    fn check(&self, signing_identity: &SigningIdentity) -> Result<MemberId, IdentityError> {
        let member = MemberId::from_signing_identity(signing_identity).ok_or(IdentityError::BadCredential)?;
        match self.directory.lookup(&member, signing_identity.signature_key.as_bytes()) {
            Lookup::Listed => Ok(member),
            Lookup::NotListed => Err(IdentityError::NotListed(member)),
            Lookup::UnknownAccount => Err(IdentityError::UnknownAccount(member.account)),
        }
    }
}

impl IdentityProvider for TacitIdentity {
    type Error = IdentityError;

    fn validate_member(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _context: MemberValidationContext<'_>,
    ) -> Result<(), Self::Error> {
        self.check(signing_identity).map(|_| ())
    }

    fn validate_external_sender(
        &self,
        _signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _extensions: Option<&ExtensionList>,
    ) -> Result<(), Self::Error> {
        Err(IdentityError::ExternalSender)
    }

    /// The device is the member: one leaf per account and device.
    fn identity(
        &self,
        signing_identity: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<Vec<u8>, Self::Error> {
        MemberId::from_signing_identity(signing_identity)
            .map(|m| m.to_identifier())
            .ok_or(IdentityError::BadCredential)
    }

    /// A leaf may only be replaced by the same device (with the key its list has now).
    fn valid_successor(
        &self,
        predecessor: &SigningIdentity,
        successor: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<bool, Self::Error> {
        let before = MemberId::from_signing_identity(predecessor).ok_or(IdentityError::BadCredential)?;
        Ok(self.check(successor)? == before)
    }

    fn supported_types(&self) -> Vec<CredentialType> {
        vec![CredentialType::BASIC]
    }
}
