//! The services: everything a request means, between decoding (routes) and storage. Each
//! function takes decoded wire types and returns wire types or a [`Failure`].

pub mod accounts;
pub mod auth;
pub mod blobs;
pub mod delivery;
pub mod devices;
pub mod groups;
pub mod key_packages;
pub mod link;
pub mod messages;
pub mod prekeys;
pub(crate) mod sockets;
pub mod transparency;

use crate::error::Failure;

/// Runs CPU-heavy verification (ML-KEM key parsing, hundreds of signatures) off the async
/// workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| Failure::Internal(format!("verification task: {e}")))?
}
