//! Group delivery (issue 11): the relay of MLS groups. It keeps, per group, the epoch of
//! the last commit and the member devices, nothing of the encrypted group context (name,
//! roles, who added whom), and reads of each message only the public header of its MLS
//! `PrivateMessage` ([`crate::mls_frame`]): group, epoch and content type.
//!
//! - **Total order of commits**: a commit is taken only when made in the group's epoch
//!   (the first for an epoch wins; the others are answered `409 stale_epoch` with the
//!   group's epoch, and their senders process the winner, rebase and retry).
//! - **Membership by authenticated device**: handshakes are encrypted, so the sender's leaf
//!   index is not public; a commit or message is taken only from a device the relay has as
//!   a member, authenticated by its session token. The commit's sender names the devices it
//!   adds and removes; the members check the commit itself, so a sender who lies here
//!   changes only whom the relay delivers to.
//! - **Fan-out without copies**: a message, commit or Welcome is stored once and referenced
//!   from each recipient's mailbox, deleted when the last one acknowledges it. Connected
//!   recipients get a small one handed over directly; a large one (more than
//!   [`LIVE_COPY_BYTES`]) is not copied per recipient: their connections read it from the
//!   store.

use std::sync::Arc;

use tacit_api::limits::{MAX_ENVELOPE_BYTES, MAX_GROUP_DEVICES, MAX_GROUP_ID_BYTES};
use tacit_api::{
    GroupCommitRequest, GroupDelivery, GroupKind, GroupMember, GroupMessageRequest, GroupStatus, SendResponse,
};
use tacit_protocol::{AccountName, DeviceId};

use super::messages::{detached, idempotency_key};
use crate::error::Failure;
use crate::mls_frame::{ContentType, private_header};
use crate::state::{AppState, now_ms};
use crate::store::{Authed, GroupMemberName, GroupSent, GroupStored, NewCommit};

/// Group payloads at most this large are handed to connected recipients with the envelope
/// (a copy per recipient); larger ones (commits and Welcomes of big groups) wake the
/// connections, which read them from the store.
pub const LIVE_COPY_BYTES: usize = 16 * 1024;

/// A group id from its path segment: 1 to [`MAX_GROUP_ID_BYTES`] bytes in lowercase hex
/// (anything else is no group: `404`).
fn group_id(hex: &str) -> Result<Vec<u8>, Failure> {
    if hex.is_empty() || hex.len() > 2 * MAX_GROUP_ID_BYTES || !hex.len().is_multiple_of(2) {
        return Err(Failure::NotFound);
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or(Failure::NotFound)
}

/// The devices of a commit's list, checked (valid names and ids, no device twice).
fn members(list: Vec<GroupMember>) -> Result<Vec<GroupMemberName>, Failure> {
    if list.len() > MAX_GROUP_DEVICES {
        return Err(Failure::TooLarge("the group would have too many member devices"));
    }
    let mut out: Vec<GroupMemberName> = Vec::with_capacity(list.len());
    for m in list {
        if AccountName::new(&m.account).is_err() || DeviceId::new(m.device).is_none() {
            return Err(Failure::BadRequest("a member device is not an account name and device id"));
        }
        out.push((m.account, m.device));
    }
    let mut sorted: Vec<&GroupMemberName> = out.iter().collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(Failure::BadRequest("a device is named twice"));
    }
    Ok(out)
}

/// Hands what was stored to the recipients' connections.
fn publish(
    state: &AppState,
    caller: &Authed,
    stored: &[GroupStored],
    group: &[u8],
    epoch: u64,
    payloads: [(&[u8], GroupKind); 2],
    now: u64,
) {
    let bus = &state.inner().bus;
    for s in stored {
        let Some((content, _)) = payloads.iter().find(|(_, kind)| *kind == s.kind) else { continue };
        if content.len() > LIVE_COPY_BYTES {
            bus.wake(s.to);
            continue;
        }
        let epoch = if s.kind == GroupKind::Welcome { epoch.saturating_add(1) } else { epoch };
        bus.publish(
            s.to,
            Arc::new(tacit_api::Envelope {
                id: s.id,
                sender: caller.account.clone(),
                sender_device: caller.key.device,
                server_time_ms: now,
                content: content.to_vec().into(),
                group: Some(GroupDelivery { id: group.to_vec().into(), kind: s.kind, epoch }),
            }),
        );
    }
}

/// `POST /v1/groups/{group}/commits`.
pub async fn commit(
    state: &AppState,
    caller: Authed,
    group: &str,
    req: GroupCommitRequest,
) -> Result<SendResponse, Failure> {
    let group = group_id(group)?;
    let header = private_header(req.commit.as_slice())
        .map_err(|_| Failure::BadRequest("the commit is not an MLS PrivateMessage"))?;
    if header.group_id != group.as_slice() {
        return Err(Failure::BadRequest("the commit is for another group"));
    }
    if header.content_type != ContentType::Commit {
        return Err(Failure::BadRequest("not a commit: send messages and proposals to /messages"));
    }
    let epoch = header.epoch;
    let added = members(req.added)?;
    let removed = members(req.removed)?;
    // A device both removed and added is taken back in with a new leaf (it lost its state:
    // restored from an older copy). Both stores apply the removals before the additions,
    // and fan the commit out first, so it gets the commit (for its old leaf), then the Welcome.
    match (&req.welcome, added.is_empty()) {
        (None, false) => return Err(Failure::BadRequest("a commit adding devices needs a Welcome")),
        (Some(_), true) => return Err(Failure::BadRequest("a Welcome without devices to add")),
        (Some(w), false) if w.as_slice().is_empty() => return Err(Failure::BadRequest("empty Welcome")),
        _ => {}
    }
    let key = idempotency_key(req.idempotency_key.as_ref())?;
    if state.storage_low() {
        return Err(Failure::StorageFull);
    }
    let state_counter = req.state_counter;
    let commit = req.commit.0;
    let welcome = req.welcome.map(|w| w.0);
    let bytes = commit.len().saturating_add(welcome.as_ref().map_or(0, Vec::len));
    let store = state.store().clone();
    let task_state = state.clone();
    let now = now_ms();
    let server_time_ms = detached(state, bytes, async move {
        let new = NewCommit {
            group_id: group.clone(),
            epoch,
            commit: commit.clone(),
            welcome: welcome.clone(),
            added,
            removed,
            state_counter,
        };
        match store.group_commit(&caller, new, now, key).await? {
            GroupSent::Stored(stored) => {
                let payloads = [
                    (commit.as_slice(), GroupKind::Commit),
                    (welcome.as_deref().unwrap_or_default(), GroupKind::Welcome),
                ];
                publish(&task_state, &caller, &stored, &group, epoch, payloads, now);
                Ok(now)
            }
            GroupSent::Duplicate { server_time_ms } => Ok(server_time_ms),
        }
    })
    .await?;
    Ok(SendResponse { server_time_ms })
}

/// `POST /v1/groups/{group}/messages`.
pub async fn message(
    state: &AppState,
    caller: Authed,
    group: &str,
    req: GroupMessageRequest,
) -> Result<SendResponse, Failure> {
    let group = group_id(group)?;
    if req.content.as_slice().len() > MAX_ENVELOPE_BYTES {
        return Err(Failure::TooLarge("envelope too large"));
    }
    let header = private_header(req.content.as_slice())
        .map_err(|_| Failure::BadRequest("the message is not an MLS PrivateMessage"))?;
    if header.group_id != group.as_slice() {
        return Err(Failure::BadRequest("the message is for another group"));
    }
    if header.content_type == ContentType::Commit {
        return Err(Failure::BadRequest("a commit: send it to /commits"));
    }
    let epoch = header.epoch;
    let key = idempotency_key(req.idempotency_key.as_ref())?;
    if state.storage_low() {
        return Err(Failure::StorageFull);
    }
    let state_counter = req.state_counter;
    let content = req.content.0;
    let store = state.store().clone();
    let task_state = state.clone();
    let now = now_ms();
    let server_time_ms = detached(state, content.len(), async move {
        match store
            .group_message(&caller, group.clone(), epoch, content.clone(), now, key, state_counter)
            .await?
        {
            GroupSent::Stored(stored) => {
                let payloads = [(content.as_slice(), GroupKind::Message), (&[][..], GroupKind::Welcome)];
                publish(&task_state, &caller, &stored, &group, epoch, payloads, now);
                Ok(now)
            }
            GroupSent::Duplicate { server_time_ms } => Ok(server_time_ms),
        }
    })
    .await?;
    Ok(SendResponse { server_time_ms })
}

/// `GET /v1/groups/{group}`.
pub async fn status(state: &AppState, caller: &Authed, group: &str) -> Result<GroupStatus, Failure> {
    let group = group_id(group)?;
    let (epoch, members) = state.store().group_status(caller.key, group).await?.ok_or(Failure::NotFound)?;
    Ok(GroupStatus {
        epoch,
        members: members.into_iter().map(|(account, device)| GroupMember { account, device }).collect(),
    })
}

/// `DELETE /v1/groups/{group}/membership`.
pub async fn leave(state: &AppState, caller: &Authed, group: &str) -> Result<(), Failure> {
    let group = group_id(group)?;
    if state.store().leave_group(caller.key, group).await? { Ok(()) } else { Err(Failure::NotFound) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_lowercase_hex_of_at_most_32_bytes() {
        assert_eq!(group_id("00ff").unwrap(), vec![0, 255]);
        assert_eq!(group_id(&"ab".repeat(32)).unwrap().len(), 32);
        for bad in ["", "0", "00FF", "0g", &"ab".repeat(33), "+1", "é0"] {
            assert!(group_id(bad).is_err(), "{bad}");
        }
    }
}
