//! Schema migrations, one list per database. A migration is appended, never edited: the
//! database records how many it has applied (SQLite `user_version`, PostgreSQL
//! `tacit_schema`).

/// SQLite migrations, in order.
pub(crate) const SQLITE: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    account_key BLOB NOT NULL,
    device_list BLOB NOT NULL,
    device_list_version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE devices (
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    identity BLOB NOT NULL,
    signed_prekey BLOB NOT NULL,
    last_resort BLOB NOT NULL,
    mailbox_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
CREATE TABLE one_time_prekeys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    key BLOB NOT NULL,
    UNIQUE (account_id, device_id, key_id)
);
CREATE INDEX one_time_prekeys_by_device ON one_time_prekeys (account_id, device_id, id);
CREATE TABLE kem_prekeys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    key BLOB NOT NULL,
    UNIQUE (account_id, device_id, key_id)
);
CREATE INDEX kem_prekeys_by_device ON kem_prekeys (account_id, device_id, id);
CREATE TABLE challenges (
    challenge BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE tokens (
    token_hash BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX tokens_by_account ON tokens (account_id);
CREATE TABLE envelopes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    server_time_ms INTEGER NOT NULL,
    content BLOB NOT NULL
);
CREATE INDEX envelopes_by_mailbox ON envelopes (account_id, device_id, id);
"#,
    // 2: the periodic purge deletes by expiry; without these it scans both tables.
    r#"
CREATE INDEX challenges_by_expiry ON challenges (expires_ms);
CREATE INDEX tokens_by_expiry ON tokens (expires_ms);
"#,
    // 3: the ciphertext bytes waiting in each mailbox (bounded like mailbox_count), counted
    // for the envelopes stored already.
    r#"
ALTER TABLE devices ADD COLUMN mailbox_bytes INTEGER NOT NULL DEFAULT 0 CHECK (mailbox_bytes >= 0);
UPDATE devices SET mailbox_bytes = coalesce((SELECT sum(length(e.content)) FROM envelopes e
    WHERE e.account_id = devices.account_id AND e.device_id = devices.device_id), 0);
"#,
    // 4: idempotency keys of sends (a retry after a 503 or a lost answer stores nothing
    // twice), kept until they expire.
    r#"
CREATE TABLE send_keys (
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    key BLOB NOT NULL,
    server_time_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (account_id, device_id, key)
) WITHOUT ROWID;
CREATE INDEX send_keys_by_expiry ON send_keys (expires_ms);
"#,
    // 5: each device's state counter, the largest it reported (a client below it was
    // restored from an older copy). A table of its own: only the device's own requests
    // write its row, so a send never locks the recipient's counter.
    r#"
CREATE TABLE state_counters (
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    value INTEGER NOT NULL CHECK (value >= 0),
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
"#,
    // 6: issue 9, linked devices. Devices remember when they were added and last seen and
    // whether they logged out; accounts the largest device id ever used (ids are never
    // reused). Link slots (a new device's offer and the approver's sealed answer) and blobs
    // (history transfer), uploaded in chunks.
    r#"
ALTER TABLE accounts ADD COLUMN max_device_id INTEGER NOT NULL DEFAULT 1;
UPDATE accounts SET max_device_id = coalesce((SELECT max(d.device_id) FROM devices d WHERE d.account_id = accounts.id), 1);
ALTER TABLE devices ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET created_ms = coalesce((SELECT a.created_ms FROM accounts a WHERE a.id = devices.account_id), 0);
ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER;
ALTER TABLE devices ADD COLUMN logged_out INTEGER NOT NULL DEFAULT 0;
CREATE TABLE link_slots (
    slot BLOB PRIMARY KEY,
    offer BLOB NOT NULL,
    answer BLOB,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX link_slots_by_expiry ON link_slots (expires_ms);
CREATE TABLE blobs (
    id BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL,
    size INTEGER NOT NULL CHECK (size > 0),
    received INTEGER NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= size),
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_by_account ON blobs (account_id);
CREATE INDEX blobs_by_expiry ON blobs (expires_ms);
CREATE TABLE blob_chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    blob_id BLOB NOT NULL,
    chunk_offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (blob_id, chunk_offset)
);
"#,
    // 7: each account key rotation (the list signed by the new key and the old key's
    // signature over it), kept for a device that missed it to follow from the key it holds.
    r#"
CREATE TABLE rotations (
    account_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    device_list BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (account_id, version)
) WITHOUT ROWID;
"#,
    // 8: issue 10, key transparency: akd's records and value states, the accounts changed
    // since the last epoch (every existing account, for the first), each epoch's signed root
    // and append-only proof, the directory's own secrets (the VRF and root signing keys), and
    // each account's devices in its newest published list (the send check requires those).
    r#"
CREATE TABLE kt_records (id BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE kt_values (
    label BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    version INTEGER NOT NULL,
    node_label BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (label, epoch)
) WITHOUT ROWID;
CREATE TABLE kt_pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
CREATE TABLE kt_epochs (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    signature BLOB NOT NULL,
    audit_proof BLOB NOT NULL
);
CREATE TABLE kt_secrets (name TEXT PRIMARY KEY, secret BLOB NOT NULL);
ALTER TABLE accounts ADD COLUMN kt_devices TEXT;
INSERT INTO kt_pending (name) SELECT name FROM accounts ORDER BY id;
"#,
    // 9: auditors' cosignatures of epoch roots (issue 10): one per auditor key and epoch,
    // verified before it is stored; served with the root so clients can require them.
    r#"
CREATE TABLE kt_cosignatures (
    epoch INTEGER NOT NULL,
    auditor BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (epoch, auditor)
) WITHOUT ROWID;
"#,
    // 10: issue 11, MLS KeyPackages for groups, opaque to the server: handed out once each
    // (oldest first), the last-resort one (at most one per device) kept when handed out.
    r#"
CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
    data BLOB NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (account_id, device_id, last_resort, id);
"#,
    // 11: issue 11, group delivery. A group is its MLS id, its epoch (the relay's total
    // order of commits) and its member devices; nothing of the encrypted group context. A
    // group message is stored once in group_payloads and referenced from each recipient's
    // envelope (whose own content is then empty), counted in `refs`, deleted at zero.
    r#"
CREATE TABLE groups (
    id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE group_members (
    group_id BLOB NOT NULL,
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    PRIMARY KEY (group_id, account_id, device_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_device ON group_members (account_id, device_id);
CREATE TABLE group_payloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    kind INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    refs INTEGER NOT NULL,
    content BLOB NOT NULL
);
ALTER TABLE envelopes ADD COLUMN payload_id INTEGER;
CREATE INDEX envelopes_by_payload ON envelopes (payload_id) WHERE payload_id IS NOT NULL;
"#,
    // 12: each mailbox's envelope and byte counts in a narrow table of their own. In
    // `devices` every count change rewrote the device's whole row (its keys, kilobytes with
    // the post-quantum prekey): storing one group message for 10,000 devices took 309 ms,
    // 53 ms of them for the envelopes (`scripts/bench_fanout`). A device without a row has
    // empty counts. `devices.mailbox_count` and `mailbox_bytes` are no longer used (SQLite
    // drops no column that a CHECK names).
    r#"
CREATE TABLE mailboxes (
    account_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    bytes INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    PRIMARY KEY (account_id, device_id)
) WITHOUT ROWID;
INSERT INTO mailboxes (account_id, device_id, count, bytes)
    SELECT account_id, device_id, mailbox_count, mailbox_bytes FROM devices
    WHERE mailbox_count > 0 OR mailbox_bytes > 0;
"#,
];

/// PostgreSQL migrations, in order (run in the connection's `search_path` schema).
pub(crate) const POSTGRES: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    account_key BYTEA NOT NULL,
    device_list BYTEA NOT NULL,
    device_list_version BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE devices (
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    identity BYTEA NOT NULL,
    signed_prekey BYTEA NOT NULL,
    last_resort BYTEA NOT NULL,
    mailbox_count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, device_id)
);
CREATE TABLE one_time_prekeys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    key_id BIGINT NOT NULL,
    key BYTEA NOT NULL,
    UNIQUE (account_id, device_id, key_id)
);
CREATE INDEX one_time_prekeys_by_device ON one_time_prekeys (account_id, device_id, id);
CREATE TABLE kem_prekeys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    key_id BIGINT NOT NULL,
    key BYTEA NOT NULL,
    UNIQUE (account_id, device_id, key_id)
);
CREATE INDEX kem_prekeys_by_device ON kem_prekeys (account_id, device_id, id);
CREATE TABLE challenges (
    challenge BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE tokens (
    token_hash BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX tokens_by_account ON tokens (account_id);
CREATE TABLE envelopes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    sender TEXT NOT NULL,
    sender_device BIGINT NOT NULL,
    server_time_ms BIGINT NOT NULL,
    content BYTEA NOT NULL
);
CREATE INDEX envelopes_by_mailbox ON envelopes (account_id, device_id, id);
"#,
    // 2: the periodic purge deletes by expiry; without these it scans both tables.
    r#"
CREATE INDEX challenges_by_expiry ON challenges (expires_ms);
CREATE INDEX tokens_by_expiry ON tokens (expires_ms);
"#,
    // 3: the ciphertext bytes waiting in each mailbox (bounded like mailbox_count), counted
    // for the envelopes stored already.
    r#"
ALTER TABLE devices ADD COLUMN mailbox_bytes BIGINT NOT NULL DEFAULT 0 CHECK (mailbox_bytes >= 0);
UPDATE devices d SET mailbox_bytes = s.total
FROM (SELECT account_id, device_id, sum(octet_length(content))::BIGINT AS total
      FROM envelopes GROUP BY account_id, device_id) s
WHERE d.account_id = s.account_id AND d.device_id = s.device_id;
"#,
    // 4: idempotency keys of sends (a retry after a 503 or a lost answer stores nothing
    // twice), kept until they expire.
    r#"
CREATE TABLE send_keys (
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    key BYTEA NOT NULL,
    server_time_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (account_id, device_id, key)
);
CREATE INDEX send_keys_by_expiry ON send_keys (expires_ms);
"#,
    // 5: each device's state counter, the largest it reported (a client below it was
    // restored from an older copy). A table of its own: only the device's own requests
    // write its row, and each locks it last, so it adds no lock-order cycle.
    r#"
CREATE TABLE state_counters (
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    value BIGINT NOT NULL CHECK (value >= 0),
    PRIMARY KEY (account_id, device_id)
);
"#,
    // 6: issue 9, linked devices (see the SQLite migration 6).
    r#"
ALTER TABLE accounts ADD COLUMN max_device_id BIGINT NOT NULL DEFAULT 1;
UPDATE accounts a SET max_device_id = s.m
FROM (SELECT account_id, max(device_id) AS m FROM devices GROUP BY account_id) s WHERE a.id = s.account_id;
ALTER TABLE devices ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
UPDATE devices d SET created_ms = a.created_ms FROM accounts a WHERE a.id = d.account_id;
ALTER TABLE devices ADD COLUMN last_seen_ms BIGINT;
ALTER TABLE devices ADD COLUMN logged_out BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE link_slots (
    slot BYTEA PRIMARY KEY,
    offer BYTEA NOT NULL,
    answer BYTEA,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX link_slots_by_expiry ON link_slots (expires_ms);
CREATE TABLE blobs (
    id BYTEA PRIMARY KEY,
    account_id BIGINT NOT NULL,
    size BIGINT NOT NULL CHECK (size > 0),
    received BIGINT NOT NULL DEFAULT 0 CHECK (received >= 0 AND received <= size),
    expires_ms BIGINT NOT NULL
);
CREATE INDEX blobs_by_account ON blobs (account_id);
CREATE INDEX blobs_by_expiry ON blobs (expires_ms);
CREATE TABLE blob_chunks (
    blob_id BYTEA NOT NULL,
    chunk_offset BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, chunk_offset)
);
"#,
    // 7: account key rotations (see the SQLite migration 7).
    r#"
CREATE TABLE rotations (
    account_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    device_list BYTEA NOT NULL,
    signature BYTEA NOT NULL,
    PRIMARY KEY (account_id, version)
);
"#,
    // 8: key transparency (see the SQLite migration 8).
    r#"
CREATE TABLE kt_records (id BYTEA PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE kt_values (
    label BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    version BIGINT NOT NULL,
    node_label BYTEA NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (label, epoch)
);
CREATE TABLE kt_pending (seq BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE kt_epochs (
    epoch BIGINT PRIMARY KEY,
    root BYTEA NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    signature BYTEA NOT NULL,
    audit_proof BYTEA NOT NULL
);
CREATE TABLE kt_secrets (name TEXT PRIMARY KEY, secret BYTEA NOT NULL);
ALTER TABLE accounts ADD COLUMN kt_devices TEXT;
INSERT INTO kt_pending (name) SELECT name FROM accounts ORDER BY id;
"#,
    // 9: auditors' cosignatures (see the SQLite migration 9).
    r#"
CREATE TABLE kt_cosignatures (
    epoch BIGINT NOT NULL,
    auditor BYTEA NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    signature BYTEA NOT NULL,
    PRIMARY KEY (epoch, auditor)
);
"#,
    // 10: MLS KeyPackages (see the SQLite migration 10).
    r#"
CREATE TABLE key_packages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    last_resort BOOLEAN NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (account_id, device_id, last_resort, id);
"#,
    // 11: group delivery (see the SQLite migration 11).
    r#"
CREATE TABLE groups (
    id BYTEA PRIMARY KEY,
    epoch BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_id BYTEA NOT NULL,
    account_id BIGINT NOT NULL,
    device_id BIGINT NOT NULL,
    PRIMARY KEY (group_id, account_id, device_id)
);
CREATE INDEX group_members_by_device ON group_members (account_id, device_id);
CREATE TABLE group_payloads (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id BYTEA NOT NULL,
    kind SMALLINT NOT NULL,
    epoch BIGINT NOT NULL,
    refs BIGINT NOT NULL,
    content BYTEA NOT NULL
);
ALTER TABLE envelopes ADD COLUMN payload_id BIGINT;
CREATE INDEX envelopes_by_payload ON envelopes (payload_id) WHERE payload_id IS NOT NULL;
"#,
];
