//! Group delivery on PostgreSQL (see [`crate::store::Store::group_commit`]). A commit holds
//! its group's row `FOR UPDATE` (the first commit for an epoch wins; the others wait, then
//! find the epoch moved), a message holds it `FOR SHARE` (so it lands wholly before or after
//! a commit). Recipient device rows are locked in one order, (account, device) ascending,
//! before ids are drawn, as [`super::PgStore`]'s sends do: ids follow commit order within a
//! mailbox, and concurrent fan-outs cannot deadlock each other.

use deadpool_postgres::GenericClient;
use tacit_api::GroupKind;
use tacit_api::limits::{MAX_GROUP_DEVICES, MAX_MAILBOX_ENVELOPES};

use super::{PgStore, claim_send_key};
use crate::store::{
    AccountId, Authed, DeviceKey, GroupMemberName, GroupSent, GroupStored, NewCommit, StoreError,
    check_commit_members, kind_code, to_i64, to_u32, to_u64,
};

async fn is_member(c: &impl GenericClient, group: &[u8], d: DeviceKey) -> Result<bool, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT 1 FROM group_members WHERE group_id = $1 AND account_id = $2 AND device_id = $3",
        )
        .await?;
    Ok(c.query_opt(&st, &[&group, &d.account, &i64::from(d.device)]).await?.is_some())
}

/// The devices named (with `live`, those that exist and have not logged out), in the
/// order given; `None` for one that is not.
async fn device_keys(
    c: &impl GenericClient,
    members: &[GroupMemberName],
    live: bool,
) -> Result<Vec<Option<DeviceKey>>, StoreError> {
    let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let devices: Vec<i64> = members.iter().map(|(_, d)| i64::from(*d)).collect();
    let st = c
        .prepare_cached(
            "SELECT t.n, a.id FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS t(name, device, n) \
             JOIN accounts a ON a.name = t.name \
             WHERE NOT $3 OR EXISTS (SELECT 1 FROM devices d WHERE d.account_id = a.id AND d.device_id = t.device \
             AND NOT d.logged_out)",
        )
        .await?;
    let mut out = vec![None; members.len()];
    for row in c.query(&st, &[&names, &devices, &live]).await? {
        let n: i64 = row.try_get(0)?;
        let account: AccountId = row.try_get(1)?;
        let i = usize::try_from(n - 1).unwrap_or(usize::MAX);
        if let (Some(slot), Some((_, device))) = (out.get_mut(i), members.get(i)) {
            *slot = Some(DeviceKey { account, device: *device });
        }
    }
    Ok(out)
}

/// Locks the rows of the group's member devices and of `extra`, in (account, device) order.
async fn lock_devices(c: &impl GenericClient, group: &[u8], extra: &[DeviceKey]) -> Result<(), StoreError> {
    let accounts: Vec<i64> = extra.iter().map(|d| d.account).collect();
    let devices: Vec<i64> = extra.iter().map(|d| i64::from(d.device)).collect();
    let st = c
        .prepare_cached(
            "SELECT 1 FROM devices d JOIN (SELECT account_id, device_id FROM group_members WHERE group_id = $1 \
             UNION SELECT * FROM unnest($2::bigint[], $3::bigint[])) t \
             ON d.account_id = t.account_id AND d.device_id = t.device_id \
             ORDER BY d.account_id, d.device_id FOR UPDATE OF d",
        )
        .await?;
    c.query(&st, &[&group, &accounts, &devices]).await?;
    Ok(())
}

async fn new_payload(
    c: &impl GenericClient,
    group: &[u8],
    kind: GroupKind,
    epoch: u64,
    content: &[u8],
) -> Result<i64, StoreError> {
    let st = c
        .prepare_cached(
            "INSERT INTO group_payloads (group_id, kind, epoch, refs, content) VALUES ($1, $2, $3, 0, $4) RETURNING id",
        )
        .await?;
    Ok(c.query_one(&st, &[&group, &kind_code(kind), &to_i64(epoch), &content]).await?.try_get(0)?)
}

/// Envelopes referring to `payload` for every live member device of the group but the
/// sender (with `room_only`, only those whose mailbox has room), in one statement, their
/// mailboxes counted in another.
async fn fan_out(
    c: &impl GenericClient,
    payload: i64,
    group: &[u8],
    kind: GroupKind,
    sender: &Authed,
    now_ms: u64,
    room_only: bool,
) -> Result<Vec<GroupStored>, StoreError> {
    let max = if room_only { i64::try_from(MAX_MAILBOX_ENVELOPES).unwrap_or(i64::MAX) } else { i64::MAX };
    let st = c
        .prepare_cached(
            "WITH sent AS (INSERT INTO envelopes \
             (account_id, device_id, sender, sender_device, server_time_ms, content, payload_id) \
             SELECT m.account_id, m.device_id, $3, $4, $5, '\\x', $1 FROM group_members m \
             JOIN devices d ON d.account_id = m.account_id AND d.device_id = m.device_id \
             WHERE m.group_id = $2 AND NOT d.logged_out AND d.mailbox_count < $7 \
             AND NOT (m.account_id = $6 AND m.device_id = $4) ORDER BY m.account_id, m.device_id \
             RETURNING id, account_id, device_id), \
             counted AS (UPDATE devices d SET mailbox_count = d.mailbox_count + 1 FROM sent \
             WHERE d.account_id = sent.account_id AND d.device_id = sent.device_id) \
             SELECT id, account_id, device_id FROM sent",
        )
        .await?;
    let rows = c
        .query(
            &st,
            &[
                &payload,
                &group,
                &sender.account,
                &i64::from(sender.key.device),
                &to_i64(now_ms),
                &sender.key.account,
                &max,
            ],
        )
        .await?;
    stored_rows(&rows, kind)
}

/// The `(id, account_id, device_id)` rows a fan-out returned, as stored envelopes.
fn stored_rows(rows: &[tokio_postgres::Row], kind: GroupKind) -> Result<Vec<GroupStored>, StoreError> {
    rows.iter()
        .map(|r| {
            let device: i64 = r.try_get(2)?;
            Ok(GroupStored {
                to: DeviceKey { account: r.try_get(1)?, device: to_u32(device) },
                id: to_u64(r.try_get(0)?),
                kind,
            })
        })
        .collect()
}

async fn set_refs(c: &impl GenericClient, payload: i64, refs: usize) -> Result<(), StoreError> {
    let refs = i64::try_from(refs).unwrap_or(i64::MAX);
    if refs == 0 {
        let st = c.prepare_cached("DELETE FROM group_payloads WHERE id = $1").await?;
        c.execute(&st, &[&payload]).await?;
    } else {
        let st = c.prepare_cached("UPDATE group_payloads SET refs = $2 WHERE id = $1").await?;
        c.execute(&st, &[&payload, &refs]).await?;
    }
    Ok(())
}

impl PgStore {
    pub(super) async fn group_commit_tx(
        &self,
        sender: &Authed,
        cm: NewCommit,
        now_ms: u64,
        key: Option<&[u8]>,
    ) -> Result<GroupSent, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(server_time_ms) = claim_send_key(&tx, sender.key, key, now_ms).await? {
            return Ok(GroupSent::Duplicate { server_time_ms });
        }
        check_commit_members(sender, &cm)?;
        let group = cm.group_id.as_slice();
        let st = tx.prepare_cached("SELECT epoch FROM groups WHERE id = $1 FOR UPDATE").await?;
        let stored_epoch: Option<i64> = match tx.query_opt(&st, &[&group]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        };
        match stored_epoch {
            None if cm.epoch != 0 => return Err(StoreError::NotFound),
            None => {
                let st = tx
                    .prepare_cached(
                        "INSERT INTO groups (id, epoch, created_ms) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING RETURNING 1",
                    )
                    .await?;
                // Made meanwhile by another device (ids are random: an attempt to take one).
                if tx.query_opt(&st, &[&group, &to_i64(now_ms)]).await?.is_none() {
                    return Err(StoreError::NotFound);
                }
                let st = tx
                    .prepare_cached(
                        "INSERT INTO group_members (group_id, account_id, device_id) VALUES ($1, $2, $3)",
                    )
                    .await?;
                tx.execute(&st, &[&group, &sender.key.account, &i64::from(sender.key.device)]).await?;
            }
            Some(epoch) => {
                if !is_member(&tx, group, sender.key).await? {
                    return Err(StoreError::NotFound);
                }
                if to_u64(epoch) != cm.epoch {
                    return Err(StoreError::StaleEpoch(to_u64(epoch)));
                }
            }
        }
        let mut added = Vec::with_capacity(cm.added.len());
        for d in device_keys(&tx, &cm.added, true).await? {
            added.push(d.ok_or(StoreError::NotFound)?);
        }
        lock_devices(&tx, group, &added).await?;
        // The commit, to the members of the epoch it ends (the removed ones included).
        let payload = new_payload(&tx, group, GroupKind::Commit, cm.epoch, &cm.commit).await?;
        let mut stored = fan_out(&tx, payload, group, GroupKind::Commit, sender, now_ms, false).await?;
        set_refs(&tx, payload, stored.len()).await?;
        let removed: Vec<DeviceKey> =
            device_keys(&tx, &cm.removed, false).await?.into_iter().flatten().collect();
        if !removed.is_empty() {
            let accounts: Vec<i64> = removed.iter().map(|d| d.account).collect();
            let devices: Vec<i64> = removed.iter().map(|d| i64::from(d.device)).collect();
            let st = tx
                .prepare_cached(
                    "DELETE FROM group_members WHERE group_id = $1 AND (account_id, device_id) IN \
                     (SELECT * FROM unnest($2::bigint[], $3::bigint[]))",
                )
                .await?;
            tx.execute(&st, &[&group, &accounts, &devices]).await?;
        }
        if !added.is_empty() {
            let st = tx.prepare_cached("SELECT count(*) FROM group_members WHERE group_id = $1").await?;
            let count: i64 = tx.query_one(&st, &[&group]).await?.try_get(0)?;
            if usize::try_from(count).unwrap_or(usize::MAX).saturating_add(added.len()) > MAX_GROUP_DEVICES {
                return Err(StoreError::GroupTooLarge);
            }
            let welcome = cm
                .welcome
                .as_deref()
                .ok_or(StoreError::GroupChange("a commit adding devices needs a Welcome"))?;
            let payload =
                new_payload(&tx, group, GroupKind::Welcome, cm.epoch.saturating_add(1), welcome).await?;
            let accounts: Vec<i64> = added.iter().map(|d| d.account).collect();
            let devices: Vec<i64> = added.iter().map(|d| i64::from(d.device)).collect();
            let st = tx
                .prepare_cached(
                    "INSERT INTO group_members (group_id, account_id, device_id) \
                     SELECT $1, * FROM unnest($2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING",
                )
                .await?;
            if tx.execute(&st, &[&group, &accounts, &devices]).await?
                != u64::try_from(added.len()).unwrap_or(0)
            {
                return Err(StoreError::GroupChange("a device added is in the group already"));
            }
            let st = tx
                .prepare_cached(
                    "WITH sent AS (INSERT INTO envelopes \
                     (account_id, device_id, sender, sender_device, server_time_ms, content, payload_id) \
                     SELECT t.a, t.d, $3, $4, $5, '\\x', $6 FROM unnest($1::bigint[], $2::bigint[]) AS t(a, d) \
                     ORDER BY t.a, t.d RETURNING id, account_id, device_id), \
                     counted AS (UPDATE devices d SET mailbox_count = d.mailbox_count + 1 FROM sent \
                     WHERE d.account_id = sent.account_id AND d.device_id = sent.device_id) \
                     SELECT id, account_id, device_id FROM sent",
                )
                .await?;
            let rows = tx
                .query(
                    &st,
                    &[
                        &accounts,
                        &devices,
                        &sender.account,
                        &i64::from(sender.key.device),
                        &to_i64(now_ms),
                        &payload,
                    ],
                )
                .await?;
            stored.extend(stored_rows(&rows, GroupKind::Welcome)?);
            set_refs(&tx, payload, rows.len()).await?;
        }
        let st = tx.prepare_cached("UPDATE groups SET epoch = epoch + 1 WHERE id = $1").await?;
        tx.execute(&st, &[&group]).await?;
        super::raise_state_counter(&tx, sender.key, cm.state_counter).await?;
        tx.commit().await?;
        Ok(GroupSent::Stored(stored))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn group_message_tx(
        &self,
        sender: &Authed,
        (group, epoch): (&[u8], u64),
        content: &[u8],
        now_ms: u64,
        key: Option<&[u8]>,
        state_counter: Option<u64>,
    ) -> Result<GroupSent, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(server_time_ms) = claim_send_key(&tx, sender.key, key, now_ms).await? {
            return Ok(GroupSent::Duplicate { server_time_ms });
        }
        let st = tx.prepare_cached("SELECT epoch FROM groups WHERE id = $1 FOR SHARE").await?;
        let Some(row) = tx.query_opt(&st, &[&group]).await? else { return Err(StoreError::NotFound) };
        let stored_epoch: i64 = row.try_get(0)?;
        if !is_member(&tx, group, sender.key).await? {
            return Err(StoreError::NotFound);
        }
        if to_u64(stored_epoch) != epoch {
            return Err(StoreError::StaleEpoch(to_u64(stored_epoch)));
        }
        lock_devices(&tx, group, &[]).await?;
        let payload = new_payload(&tx, group, GroupKind::Message, epoch, content).await?;
        let stored = fan_out(&tx, payload, group, GroupKind::Message, sender, now_ms, true).await?;
        set_refs(&tx, payload, stored.len()).await?;
        super::raise_state_counter(&tx, sender.key, state_counter).await?;
        tx.commit().await?;
        Ok(GroupSent::Stored(stored))
    }
}

pub(super) async fn status(
    c: &impl GenericClient,
    member: DeviceKey,
    group: &[u8],
) -> Result<Option<(u64, Vec<GroupMemberName>)>, StoreError> {
    if !is_member(c, group, member).await? {
        return Ok(None);
    }
    let st = c.prepare_cached("SELECT epoch FROM groups WHERE id = $1").await?;
    let epoch: i64 = c.query_one(&st, &[&group]).await?.try_get(0)?;
    let st = c
        .prepare_cached(
            "SELECT a.name, m.device_id FROM group_members m JOIN accounts a ON a.id = m.account_id \
             WHERE m.group_id = $1 ORDER BY a.name, m.device_id",
        )
        .await?;
    let mut members = Vec::new();
    for r in c.query(&st, &[&group]).await? {
        let device: i64 = r.try_get(1)?;
        members.push((r.try_get::<_, String>(0)?, to_u32(device)));
    }
    Ok(Some((to_u64(epoch), members)))
}

pub(super) async fn leave(
    c: &impl GenericClient,
    member: DeviceKey,
    group: &[u8],
) -> Result<bool, StoreError> {
    let st = c
        .prepare_cached(
            "DELETE FROM group_members WHERE group_id = $1 AND account_id = $2 AND device_id = $3",
        )
        .await?;
    let gone = c.execute(&st, &[&group, &member.account, &i64::from(member.device)]).await?;
    let st = c
        .prepare_cached(
            "DELETE FROM groups WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1)",
        )
        .await?;
    c.execute(&st, &[&group]).await?;
    Ok(gone > 0)
}

/// Before a device's (or with `device` `None`, an account's) envelopes are deleted (see the
/// SQLite store's `groups::forget`).
pub(super) async fn forget(
    c: &impl GenericClient,
    account: AccountId,
    device: Option<u32>,
) -> Result<(), StoreError> {
    let device = device.map(i64::from);
    for sql in [
        "UPDATE group_payloads p SET refs = p.refs - g.n FROM (SELECT payload_id, count(*) AS n FROM envelopes \
         WHERE account_id = $1 AND ($2::bigint IS NULL OR device_id = $2) AND payload_id IS NOT NULL \
         GROUP BY payload_id) g WHERE p.id = g.payload_id",
        "DELETE FROM group_payloads WHERE refs <= 0 AND id IN (SELECT payload_id FROM envelopes \
         WHERE account_id = $1 AND ($2::bigint IS NULL OR device_id = $2) AND payload_id IS NOT NULL)",
        "DELETE FROM groups WHERE id IN (SELECT group_id FROM group_members WHERE account_id = $1 \
         AND ($2::bigint IS NULL OR device_id = $2)) AND NOT EXISTS (SELECT 1 FROM group_members m \
         WHERE m.group_id = groups.id AND NOT (m.account_id = $1 AND ($2::bigint IS NULL OR m.device_id = $2)))",
        "DELETE FROM group_members WHERE account_id = $1 AND ($2::bigint IS NULL OR device_id = $2)",
    ] {
        let st = c.prepare_cached(sql).await?;
        c.execute(&st, &[&account, &device]).await?;
    }
    Ok(())
}

/// After envelopes referring to these payloads (`payload ids`, `how many`) were deleted.
pub(super) async fn release(
    c: &impl GenericClient,
    payloads: &[i64],
    counts: &[i64],
) -> Result<(), StoreError> {
    if payloads.is_empty() {
        return Ok(());
    }
    let st = c
        .prepare_cached(
            "UPDATE group_payloads p SET refs = p.refs - t.n \
             FROM unnest($1::bigint[], $2::bigint[]) AS t(id, n) WHERE p.id = t.id",
        )
        .await?;
    c.execute(&st, &[&payloads, &counts]).await?;
    let st = c.prepare_cached("DELETE FROM group_payloads WHERE id = ANY($1) AND refs <= 0").await?;
    c.execute(&st, &[&payloads]).await?;
    Ok(())
}
