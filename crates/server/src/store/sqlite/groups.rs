//! Group delivery on SQLite (see [`crate::store::Store::group_commit`]): the group row's
//! epoch orders commits (one writer, so the first commit for an epoch wins), and a group
//! message is one `group_payloads` row referenced from each recipient's envelope.

use rusqlite::{Connection, OptionalExtension, params};
use tacit_api::GroupKind;
use tacit_api::limits::{MAX_GROUP_DEVICES, MAX_MAILBOX_ENVELOPES};

use super::{duplicate_send, remember_send};
use crate::store::{
    AccountId, Authed, DeviceKey, GroupMemberName, GroupSent, GroupStored, NewCommit, StoreError,
    check_commit_members, kind_code, to_i64, to_u32, to_u64,
};

fn is_member(c: &Connection, group: &[u8], d: DeviceKey) -> Result<bool, StoreError> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM group_members WHERE group_id = ?1 AND account_id = ?2 AND device_id = ?3",
    )?
    .exists(params![group, d.account, d.device])?)
}

/// The device `name`/`device` (with `live`, only one that exists and has not logged out).
fn device_key(
    c: &Connection,
    (name, device): &GroupMemberName,
    live: bool,
) -> Result<Option<DeviceKey>, StoreError> {
    let account: Option<AccountId> = c
        .prepare_cached("SELECT id FROM accounts WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let Some(account) = account else { return Ok(None) };
    let key = DeviceKey { account, device: *device };
    if live
        && !c
            .prepare_cached(
                "SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2 AND logged_out = 0",
            )?
            .exists(params![account, device])?
    {
        return Ok(None);
    }
    Ok(Some(key))
}

fn new_payload(
    c: &Connection,
    group: &[u8],
    kind: GroupKind,
    epoch: u64,
    content: &[u8],
) -> Result<i64, StoreError> {
    c.prepare_cached(
        "INSERT INTO group_payloads (group_id, kind, epoch, refs, content) VALUES (?1, ?2, ?3, 0, ?4)",
    )?
    .execute(params![group, kind_code(kind), to_i64(epoch), content])?;
    Ok(c.last_insert_rowid())
}

/// Counts one more envelope (of no bytes of its own) in a mailbox.
const COUNT_ONE: &str = "INSERT INTO mailboxes (account_id, device_id, count) VALUES (?1, ?2, 1) \
     ON CONFLICT (account_id, device_id) DO UPDATE SET count = count + 1";

/// One envelope referring to `payload` in `to`'s mailbox, counted there.
fn envelope(
    c: &Connection,
    payload: i64,
    to: DeviceKey,
    sender: &Authed,
    now_ms: u64,
) -> Result<u64, StoreError> {
    c.prepare_cached(
        "INSERT INTO envelopes (account_id, device_id, sender, sender_device, server_time_ms, content, payload_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, x'', ?6)",
    )?
    .execute(params![to.account, to.device, sender.account, sender.key.device, to_i64(now_ms), payload])?;
    let id = to_u64(c.last_insert_rowid());
    c.prepare_cached(COUNT_ONE)?.execute(params![to.account, to.device])?;
    Ok(id)
}

/// Envelopes referring to `payload` for every live member device of the group but the
/// sender (with `room_only`, only those whose mailbox has room), in one statement.
fn fan_out(
    c: &Connection,
    payload: i64,
    group: &[u8],
    kind: GroupKind,
    sender: &Authed,
    now_ms: u64,
    room_only: bool,
) -> Result<Vec<GroupStored>, StoreError> {
    let max = if room_only { i64::try_from(MAX_MAILBOX_ENVELOPES).unwrap_or(i64::MAX) } else { i64::MAX };
    let mut insert = c.prepare_cached(
        "INSERT INTO envelopes (account_id, device_id, sender, sender_device, server_time_ms, content, payload_id) \
         SELECT m.account_id, m.device_id, ?3, ?4, ?5, x'', ?1 FROM group_members m \
         JOIN devices d ON d.account_id = m.account_id AND d.device_id = m.device_id \
         LEFT JOIN mailboxes b ON b.account_id = m.account_id AND b.device_id = m.device_id \
         WHERE m.group_id = ?2 AND d.logged_out = 0 AND coalesce(b.count, 0) < ?7 \
         AND NOT (m.account_id = ?6 AND m.device_id = ?4) ORDER BY m.account_id, m.device_id \
         RETURNING id, account_id, device_id",
    )?;
    let rows = insert.query_map(
        params![payload, group, sender.account, sender.key.device, to_i64(now_ms), sender.key.account, max],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
    )?;
    let mut stored = Vec::new();
    for row in rows {
        let (id, account, device) = row?;
        stored.push(GroupStored { to: DeviceKey { account, device: to_u32(device) }, id: to_u64(id), kind });
    }
    let mut bump = c.prepare_cached(COUNT_ONE)?;
    for s in &stored {
        bump.execute(params![s.to.account, s.to.device])?;
    }
    Ok(stored)
}

fn set_refs(c: &Connection, payload: i64, refs: usize) -> Result<(), StoreError> {
    let refs = i64::try_from(refs).unwrap_or(i64::MAX);
    if refs == 0 {
        c.prepare_cached("DELETE FROM group_payloads WHERE id = ?1")?.execute([payload])?;
    } else {
        c.prepare_cached("UPDATE group_payloads SET refs = ?2 WHERE id = ?1")?
            .execute(params![payload, refs])?;
    }
    Ok(())
}

pub(super) fn commit(
    c: &Connection,
    sender: &Authed,
    cm: NewCommit,
    now_ms: u64,
    key: Option<&[u8]>,
) -> Result<GroupSent, StoreError> {
    if let Some(server_time_ms) = duplicate_send(c, sender.key, key, now_ms)? {
        return Ok(GroupSent::Duplicate { server_time_ms });
    }
    check_commit_members(sender, &cm)?;
    let group = cm.group_id.as_slice();
    let stored_epoch: Option<i64> = c
        .prepare_cached("SELECT epoch FROM groups WHERE id = ?1")?
        .query_row([group], |r| r.get(0))
        .optional()?;
    match stored_epoch {
        None if cm.epoch != 0 => return Err(StoreError::NotFound),
        None => {
            c.prepare_cached("INSERT INTO groups (id, epoch, created_ms) VALUES (?1, 0, ?2)")?
                .execute(params![group, to_i64(now_ms)])?;
            c.prepare_cached(
                "INSERT INTO group_members (group_id, account_id, device_id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![group, sender.key.account, sender.key.device])?;
        }
        Some(epoch) => {
            if !is_member(c, group, sender.key)? {
                return Err(StoreError::NotFound);
            }
            if to_u64(epoch) != cm.epoch {
                return Err(StoreError::StaleEpoch(to_u64(epoch)));
            }
        }
    }
    // The commit, to the members of the epoch it ends (the removed ones included).
    let payload = new_payload(c, group, GroupKind::Commit, cm.epoch, &cm.commit)?;
    let mut stored = fan_out(c, payload, group, GroupKind::Commit, sender, now_ms, false)?;
    set_refs(c, payload, stored.len())?;
    for member in &cm.removed {
        if let Some(d) = device_key(c, member, false)? {
            c.prepare_cached(
                "DELETE FROM group_members WHERE group_id = ?1 AND account_id = ?2 AND device_id = ?3",
            )?
            .execute(params![group, d.account, d.device])?;
        }
    }
    if !cm.added.is_empty() {
        let count: i64 = c
            .prepare_cached("SELECT count(*) FROM group_members WHERE group_id = ?1")?
            .query_row([group], |r| r.get(0))?;
        if usize::try_from(count).unwrap_or(usize::MAX).saturating_add(cm.added.len()) > MAX_GROUP_DEVICES {
            return Err(StoreError::GroupTooLarge);
        }
        let welcome = cm
            .welcome
            .as_deref()
            .ok_or(StoreError::GroupChange("a commit adding devices needs a Welcome"))?;
        let payload = new_payload(c, group, GroupKind::Welcome, cm.epoch.saturating_add(1), welcome)?;
        let mut join = c.prepare_cached(
            "INSERT INTO group_members (group_id, account_id, device_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?;
        let mut welcomed = 0usize;
        for member in &cm.added {
            let d = device_key(c, member, true)?.ok_or(StoreError::NotFound)?;
            if join.execute(params![group, d.account, d.device])? == 0 {
                return Err(StoreError::GroupChange("a device added is in the group already"));
            }
            let id = envelope(c, payload, d, sender, now_ms)?;
            stored.push(GroupStored { to: d, id, kind: GroupKind::Welcome });
            welcomed += 1;
        }
        set_refs(c, payload, welcomed)?;
    }
    c.prepare_cached("UPDATE groups SET epoch = epoch + 1 WHERE id = ?1")?.execute([group])?;
    remember_send(c, sender.key, key, now_ms)?;
    Ok(GroupSent::Stored(stored))
}

pub(super) fn message(
    c: &Connection,
    sender: &Authed,
    group: &[u8],
    epoch: u64,
    content: &[u8],
    now_ms: u64,
    key: Option<&[u8]>,
) -> Result<GroupSent, StoreError> {
    if let Some(server_time_ms) = duplicate_send(c, sender.key, key, now_ms)? {
        return Ok(GroupSent::Duplicate { server_time_ms });
    }
    let stored_epoch: Option<i64> = c
        .prepare_cached("SELECT epoch FROM groups WHERE id = ?1")?
        .query_row([group], |r| r.get(0))
        .optional()?;
    let Some(stored_epoch) = stored_epoch else { return Err(StoreError::NotFound) };
    if !is_member(c, group, sender.key)? {
        return Err(StoreError::NotFound);
    }
    if to_u64(stored_epoch) != epoch {
        return Err(StoreError::StaleEpoch(to_u64(stored_epoch)));
    }
    let payload = new_payload(c, group, GroupKind::Message, epoch, content)?;
    let stored = fan_out(c, payload, group, GroupKind::Message, sender, now_ms, true)?;
    set_refs(c, payload, stored.len())?;
    remember_send(c, sender.key, key, now_ms)?;
    Ok(GroupSent::Stored(stored))
}

pub(super) fn status(
    c: &Connection,
    member: DeviceKey,
    group: &[u8],
) -> Result<Option<(u64, Vec<GroupMemberName>)>, StoreError> {
    if !is_member(c, group, member)? {
        return Ok(None);
    }
    let epoch: i64 =
        c.prepare_cached("SELECT epoch FROM groups WHERE id = ?1")?.query_row([group], |r| r.get(0))?;
    let mut st = c.prepare_cached(
        "SELECT a.name, m.device_id FROM group_members m JOIN accounts a ON a.id = m.account_id \
         WHERE m.group_id = ?1 ORDER BY a.name, m.device_id",
    )?;
    let members = st
        .query_map([group], |r| Ok((r.get::<_, String>(0)?, to_u32(r.get(1)?))))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((to_u64(epoch), members)))
}

pub(super) fn leave(c: &Connection, member: DeviceKey, group: &[u8]) -> Result<bool, StoreError> {
    let gone = c
        .prepare_cached(
            "DELETE FROM group_members WHERE group_id = ?1 AND account_id = ?2 AND device_id = ?3",
        )?
        .execute(params![group, member.account, member.device])?;
    c.prepare_cached(
        "DELETE FROM groups WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM group_members WHERE group_id = ?1)",
    )?
    .execute([group])?;
    Ok(gone > 0)
}

/// Before a device's (or with `device` `None`, an account's) envelopes are deleted: the
/// group payloads they refer to lose those references (deleted at zero), and its group
/// memberships go (a group left with no member is deleted).
pub(super) fn forget(c: &Connection, account: AccountId, device: Option<u32>) -> Result<(), StoreError> {
    let device = device.map(i64::from);
    for sql in [
        "UPDATE group_payloads SET refs = refs - (SELECT count(*) FROM envelopes e WHERE e.payload_id = group_payloads.id \
         AND e.account_id = ?1 AND (?2 IS NULL OR e.device_id = ?2)) \
         WHERE id IN (SELECT payload_id FROM envelopes WHERE account_id = ?1 AND (?2 IS NULL OR device_id = ?2) \
         AND payload_id IS NOT NULL)",
        "DELETE FROM group_payloads WHERE refs <= 0 AND id IN (SELECT payload_id FROM envelopes \
         WHERE account_id = ?1 AND (?2 IS NULL OR device_id = ?2) AND payload_id IS NOT NULL)",
        "DELETE FROM groups WHERE id IN (SELECT group_id FROM group_members WHERE account_id = ?1 \
         AND (?2 IS NULL OR device_id = ?2)) AND NOT EXISTS (SELECT 1 FROM group_members m \
         WHERE m.group_id = groups.id AND NOT (m.account_id = ?1 AND (?2 IS NULL OR m.device_id = ?2)))",
        "DELETE FROM group_members WHERE account_id = ?1 AND (?2 IS NULL OR device_id = ?2)",
    ] {
        c.prepare_cached(sql)?.execute(params![account, device])?;
    }
    Ok(())
}

/// After envelopes referring to these payloads (`(payload, how many)`) were deleted.
pub(super) fn release(c: &Connection, payloads: &[(i64, i64)]) -> Result<(), StoreError> {
    let mut dec = c.prepare_cached("UPDATE group_payloads SET refs = refs - ?2 WHERE id = ?1")?;
    let mut del = c.prepare_cached("DELETE FROM group_payloads WHERE id = ?1 AND refs <= 0")?;
    for (payload, n) in payloads {
        dec.execute(params![payload, n])?;
        del.execute([payload])?;
    }
    Ok(())
}
