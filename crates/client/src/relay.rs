//! [`RelayClient`]: the wire without end-to-end encryption, for load generation
//! (`tacit bench relay`) and server tests. It registers throwaway accounts with real keys
//! (the server checks every signature) but sends opaque bytes: never use it for messages.

use std::time::Duration;

use tacit_api as api;
use tacit_protocol::{AccountName, PrekeyPolicy, UnixTime};

use crate::client::{NewAccount, register_account};
use crate::error::{ClientError, Result};
pub use crate::net::RelayEvent;
use crate::net::{Api, ConnectOptions, Incoming, Live, SendOutcome};

/// A registered, authenticated device that sends and receives opaque envelopes.
pub struct RelayClient {
    api: Api,
    name: String,
}

/// A live WebSocket of a [`RelayClient`].
pub struct RelayStream {
    live: Live,
}

impl RelayClient {
    /// Creates account `name` (device 1, a signed prekey and a last-resort key only) on
    /// `server` and authenticates.
    pub async fn register(server: &str, name: &str, registration_token: Option<&str>) -> Result<Self> {
        Self::register_with(server, name, registration_token, &ConnectOptions::default()).await
    }

    /// [`Self::register`], reaching the server as `options` say (extra trusted CAs).
    pub async fn register_with(
        server: &str,
        name: &str,
        registration_token: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Self> {
        let account_name = AccountName::new(name)?;
        // No one-time prekeys: nobody starts a session with a bench account.
        let policy = PrekeyPolicy { one_time_target: 0, ..PrekeyPolicy::default() };
        let new = NewAccount::generate(&account_name, &policy, UnixTime(0))?;
        let mut api = Api::new(server, options)?;
        let list = new.list.to_bytes();
        register_account(&api, &account_name, &new.account, list, new.upload, registration_token).await?;
        let identity = &new.identity;
        api.authenticate(name, 1, |m| Ok(identity.sign_auth_message(m)?.as_bytes().to_vec())).await?;
        Ok(Self { api, name: name.into() })
    }

    /// The account name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `content` to device 1 of `to`; returns the server's acceptance time (ms).
    pub async fn send_opaque(&self, to: &str, content: Vec<u8>) -> Result<u64> {
        let req = api::SendRequest {
            recipient: to.into(),
            envelopes: vec![api::OutgoingEnvelope { device: 1, content: api::Bytes(content) }],
            idempotency_key: None,
            state_counter: None,
        };
        match self.api.send(&req).await? {
            SendOutcome::Sent(r) => Ok(r.server_time_ms),
            SendOutcome::Mismatched(_) | SendOutcome::Stale(_) => Err(ClientError::Server {
                status: 409,
                code: Some(api::ErrorCode::MismatchedDevices),
                message: to.into(),
            }),
        }
    }

    /// The oldest page of this device's mailbox on the server (`GET /v1/messages`): what is
    /// stored and not yet acknowledged.
    pub async fn fetch(&self) -> Result<api::FetchResponse> {
        self.api.fetch(0).await
    }

    /// Acknowledges envelopes with `POST /v1/messages/ack`.
    pub async fn ack_http(&self, ids: Vec<u64>) -> Result<()> {
        self.api.ack(ids, None).await
    }

    /// Opens the WebSocket.
    pub async fn connect(&self) -> Result<RelayStream> {
        Ok(RelayStream { live: self.api.connect().await? })
    }

    /// Deletes the account.
    pub async fn delete(self) -> Result<()> {
        self.api.delete_account(&self.name).await
    }
}

/// Unauthenticated requests, for load generators that play an abusive client
/// (`tacit bench relay --abuse`): each method makes exactly one request.
pub struct RelayProbe {
    api: Api,
}

impl RelayProbe {
    /// A prober of `server`, reaching it as `options` say (e.g. from a chosen local address).
    pub fn new(server: &str, options: &ConnectOptions) -> Result<Self> {
        Ok(Self { api: Api::new(server, options)? })
    }

    /// `GET /v1/accounts/{name}/devices`; [`ClientError::NotFound`] for an unknown name.
    pub async fn device_list(&self, name: &str) -> Result<()> {
        self.api.device_list(name).await.map(drop)
    }

    /// Creates account `name` (real keys, one `POST /v1/accounts`, no sign-in).
    pub async fn create_account(&self, name: &str, registration_token: Option<&str>) -> Result<()> {
        let account_name = AccountName::new(name)?;
        let policy = PrekeyPolicy { one_time_target: 0, ..PrekeyPolicy::default() };
        let new = NewAccount::generate(&account_name, &policy, UnixTime(0))?;
        let list = new.list.to_bytes();
        register_account(&self.api, &account_name, &new.account, list, new.upload, registration_token).await
    }
}

impl RelayStream {
    fn event(incoming: Incoming) -> Result<Option<RelayEvent>> {
        Ok(match incoming {
            Incoming::Event(e) => Some(e),
            Incoming::Drained | Incoming::PrekeysLow => None,
            Incoming::Closed => return Err(ClientError::Network("WebSocket closed".into())),
        })
    }

    /// The next event, `Ok(None)` on timeout; an error when the server closed.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<RelayEvent>> {
        loop {
            let Some(incoming) = self.live.next(timeout).await? else { return Ok(None) };
            if let Some(event) = Self::event(incoming)? {
                return Ok(Some(event));
            }
        }
    }

    /// The next event if one has arrived already.
    pub fn try_next(&mut self) -> Result<Option<RelayEvent>> {
        while let Some(incoming) = self.live.try_next()? {
            if let Some(event) = Self::event(incoming)? {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Queues a send of `content` to device 1 of `to`, answered by [`RelayEvent::Sent`] or
    /// [`RelayEvent::SendFailed`] with `id`. Written by the next [`Self::flush`].
    pub async fn queue_send(&mut self, id: u64, to: &str, content: Vec<u8>) -> Result<()> {
        let envelopes = vec![api::OutgoingEnvelope { device: 1, content: api::Bytes(content) }];
        let frame = api::ClientFrame::Send {
            id,
            recipient: to.into(),
            envelopes,
            idempotency_key: None,
            state_counter: None,
        };
        self.live.queue(&frame).await
    }

    /// Queues an acknowledgement (written by the next [`Self::flush`]).
    pub async fn queue_ack(&mut self, ids: Vec<u64>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.live.queue(&api::ClientFrame::Ack { ids, state_counter: None }).await
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> Result<()> {
        self.live.flush().await
    }

    /// Acknowledges envelopes now.
    pub async fn ack(&mut self, ids: Vec<u64>) -> Result<()> {
        self.live.ack(ids, None).await
    }
}
