//! Why a transparency check failed. Every variant names the check, so the CLI can say which
//! of the server's answers could not be trusted.

/// A key transparency check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KtError {
    /// An encoding that does not decode (a proof, an entry, a root).
    #[error("malformed transparency data: {0}")]
    Malformed(&'static str),
    /// More bytes than the format allows.
    #[error("transparency data too large: {0}")]
    TooLarge(&'static str),
    /// The epoch root's signature does not verify under the pinned transparency key.
    #[error("the epoch root is not signed by the server's transparency key")]
    BadRootSignature,
    /// The root is signed for another log (namespace) than the one pinned.
    #[error("the epoch root belongs to another log ({0})")]
    WrongNamespace(String),
    /// The lookup or history proof does not verify against the signed root.
    #[error("the key transparency proof does not verify: {0}")]
    BadProof(String),
    /// The proof is for another account's label.
    #[error("the key transparency proof is for another account")]
    WrongAccount,
}
