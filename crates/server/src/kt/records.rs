//! How akd's records are stored: the azks and tree nodes as `(id, data)` rows keyed by
//! akd's own binary id, value states as rows of their own (queried by label). The encoding
//! is ours (akd leaves it to each backend); a record that does not decode is a storage
//! error, never a panic.
//!
//! Tree nodes are written compactly ([`NODE_COMPACT2`]): a node label keeps only the bytes
//! its length covers (a node at depth 20 has 3 significant bytes of 32), epochs are
//! LEB128, the record's label is its key's (not stored), the previous version's parent and
//! children are flagged where they are the latest version's (as they are unless a leaf was
//! inserted below), and one flags byte per version says which fields follow. Every epoch
//! rewrites each node on its updates' paths, spread over the whole table, so the bytes a
//! node takes decide how many pages an epoch writes: a node at depth 20 with a leaf child
//! and its previous version takes 124 bytes, against 173 in the first compact form
//! ([`NODE_COMPACT`], which repeated them) and 428 in the fixed-size form ([`NODE`],
//! big-endian integers and 32-byte labels). Both are still read (databases written
//! before); the fixed form is still written for a label with bits set past its length,
//! which the compact forms cannot hold.

use akd::storage::Storable;
use akd::storage::types::{DbRecord, ValueState};
use akd::tree_node::{NodeKey, TreeNode, TreeNodeType, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, AzksValue, NodeLabel};
use tacit_transparency::put_varint;

const AZKS: u8 = 1;
/// A tree node with fixed-size fields.
const NODE: u8 = 2;
/// A tree node in the first compact form (read, no longer written).
const NODE_COMPACT: u8 = 3;
/// A tree node in the compact form: no record label, the previous version relative to
/// the latest.
const NODE_COMPACT2: u8 = 4;

/// Compact node flags: the node's label is the record's (not repeated).
const SAME_LABEL: u8 = 1;
/// Compact node flags: a left child follows.
const HAS_LEFT: u8 = 2;
/// Compact node flags: a right child follows.
const HAS_RIGHT: u8 = 4;
/// Compact node flags: the node type, in two bits from here.
const TYPE_SHIFT: u8 = 3;
/// The flags a compact node may carry.
const FLAGS: u8 = SAME_LABEL | HAS_LEFT | HAS_RIGHT | (3 << TYPE_SHIFT);
/// Compact node flags ([`NODE_COMPACT2`]'s previous version only): the parent is the
/// latest version's (not repeated).
const SAME_PARENT: u8 = 1 << 5;
/// Compact node flags (previous version only): the left child is the latest version's.
const SAME_LEFT: u8 = 1 << 6;
/// Compact node flags (previous version only): the right child is the latest version's.
const SAME_RIGHT: u8 = 1 << 7;

/// The bytes of a label of `len` bits that can hold bits.
fn label_bytes(len: u32) -> usize {
    (len as usize).div_ceil(8).min(32)
}

/// Whether `l` has no bit set past its length (the compact form keeps only those).
fn canonical(l: &NodeLabel) -> bool {
    let n = label_bytes(l.label_len);
    let tail_ok = l.label_val.get(n..).is_some_and(|t| t.iter().all(|b| *b == 0));
    let used = l.label_len % 8;
    let last_ok = used == 0 || n == 0 || l.label_val.get(n - 1).is_some_and(|b| b & (0xff >> used) == 0);
    l.label_len <= 256 && tail_ok && last_ok
}

fn put_compact_label(out: &mut Vec<u8>, l: &NodeLabel) {
    // `canonical` holds: the length is at most 256.
    out.extend_from_slice(&(l.label_len as u16).to_be_bytes());
    out.extend_from_slice(l.label_val.get(..label_bytes(l.label_len)).unwrap_or_default());
}

/// A node version; `base` (the latest version, when this is the previous one in
/// [`NODE_COMPACT2`]) supplies the parent and children it shares.
fn put_compact_node(out: &mut Vec<u8>, n: &TreeNode, record_label: &NodeLabel, base: Option<&TreeNode>) {
    let same = n.label == *record_label;
    let same_parent = base.is_some_and(|b| b.parent == n.parent);
    let same_left = n.left_child.is_some() && base.is_some_and(|b| b.left_child == n.left_child);
    let same_right = n.right_child.is_some() && base.is_some_and(|b| b.right_child == n.right_child);
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    let flags = flag(same, SAME_LABEL)
        | flag(n.left_child.is_some(), HAS_LEFT)
        | flag(n.right_child.is_some(), HAS_RIGHT)
        | (node_type(n.node_type) << TYPE_SHIFT)
        | flag(same_parent, SAME_PARENT)
        | flag(same_left, SAME_LEFT)
        | flag(same_right, SAME_RIGHT);
    out.push(flags);
    if !same {
        put_compact_label(out, &n.label);
    }
    put_varint(out, n.last_epoch);
    put_varint(out, n.min_descendant_epoch);
    if !same_parent {
        put_compact_label(out, &n.parent);
    }
    for (child, shared) in [(&n.left_child, same_left), (&n.right_child, same_right)] {
        if let Some(child) = child.as_ref().filter(|_| !shared) {
            put_compact_label(out, child);
        }
    }
    out.extend_from_slice(&n.hash.0);
}

fn node_labels_canonical(n: &TreeNode) -> bool {
    [Some(&n.label), Some(&n.parent), n.left_child.as_ref(), n.right_child.as_ref()]
        .into_iter()
        .flatten()
        .all(canonical)
}

/// A value state as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredValue {
    /// The akd label (the account's).
    pub label: Vec<u8>,
    /// The epoch it was published in.
    pub epoch: u64,
    /// The label's version.
    pub version: u64,
    /// The VRF node label, encoded by [`put_label`] (36 bytes).
    pub node_label: Vec<u8>,
    /// The committed value.
    pub value: Vec<u8>,
}

fn put_label(out: &mut Vec<u8>, l: &NodeLabel) {
    out.extend_from_slice(&l.label_len.to_be_bytes());
    out.extend_from_slice(&l.label_val);
}

fn put_opt_label(out: &mut Vec<u8>, l: &Option<NodeLabel>) {
    match l {
        None => out.push(0),
        Some(l) => {
            out.push(1);
            put_label(out, l);
        }
    }
}

fn node_type(t: TreeNodeType) -> u8 {
    match t {
        TreeNodeType::Leaf => 1,
        TreeNodeType::Root => 2,
        TreeNodeType::Interior => 3,
    }
}

fn to_node_type(t: u8) -> Result<TreeNodeType, Corrupt> {
    match t {
        1 => Ok(TreeNodeType::Leaf),
        2 => Ok(TreeNodeType::Root),
        3 => Ok(TreeNodeType::Interior),
        _ => Err(Corrupt),
    }
}

fn put_node(out: &mut Vec<u8>, n: &TreeNode) {
    put_label(out, &n.label);
    out.extend_from_slice(&n.last_epoch.to_be_bytes());
    out.extend_from_slice(&n.min_descendant_epoch.to_be_bytes());
    put_label(out, &n.parent);
    out.push(node_type(n.node_type));
    put_opt_label(out, &n.left_child);
    put_opt_label(out, &n.right_child);
    out.extend_from_slice(&n.hash.0);
}

/// The encoding of an azks or tree node record (`None` for a value state, which has a table
/// of its own).
pub fn encode(record: &DbRecord) -> Option<Vec<u8>> {
    match record {
        DbRecord::Azks(a) => {
            let mut out = Vec::with_capacity(17);
            out.push(AZKS);
            out.extend_from_slice(&a.latest_epoch.to_be_bytes());
            out.extend_from_slice(&a.num_nodes.to_be_bytes());
            Some(out)
        }
        DbRecord::TreeNode(n)
            if canonical(&n.label)
                && node_labels_canonical(&n.latest_node)
                && n.previous_node.as_ref().is_none_or(node_labels_canonical) =>
        {
            let mut out = Vec::with_capacity(2 * 80);
            out.push(NODE_COMPACT2);
            put_compact_node(&mut out, &n.latest_node, &n.label, None);
            match &n.previous_node {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    put_compact_node(&mut out, p, &n.label, Some(&n.latest_node));
                }
            }
            Some(out)
        }
        DbRecord::TreeNode(n) => Some(encode_fixed(n)),
        DbRecord::ValueState(_) => None,
    }
}

/// A tree node in the fixed-size form ([`NODE`]).
fn encode_fixed(n: &TreeNodeWithPreviousValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * 180);
    out.push(NODE);
    put_label(&mut out, &n.label);
    put_node(&mut out, &n.latest_node);
    match &n.previous_node {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            put_node(&mut out, p);
        }
    }
    out
}

/// A value state's row.
pub fn stored_value(v: &ValueState) -> StoredValue {
    let mut node_label = Vec::with_capacity(36);
    put_label(&mut node_label, &v.label);
    StoredValue {
        label: v.username.0.clone(),
        epoch: v.epoch,
        version: v.version,
        node_label,
        value: v.value.0.clone(),
    }
}

/// The akd id of the azks record (its storage type, then akd's one key).
pub const AZKS_ID: [u8; 2] = [AZKS, 1];

/// The epoch of a stored azks record.
pub fn azks_epoch(data: &[u8]) -> Option<u64> {
    match decode(&AZKS_ID, data) {
        Ok(DbRecord::Azks(a)) => Some(a.latest_epoch),
        _ => None,
    }
}

/// Why a stored record did not decode.
#[derive(Debug)]
pub struct Corrupt;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        self.take(N)?.try_into().map_err(|_| Corrupt)
    }
    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn label(&mut self) -> Result<NodeLabel, Corrupt> {
        let len = self.u32()?;
        if len > 256 {
            return Err(Corrupt);
        }
        Ok(NodeLabel { label_len: len, label_val: self.array()? })
    }
    fn opt_label(&mut self) -> Result<Option<NodeLabel>, Corrupt> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.label()?)),
            _ => Err(Corrupt),
        }
    }
    fn node(&mut self) -> Result<TreeNode, Corrupt> {
        Ok(TreeNode {
            label: self.label()?,
            last_epoch: self.u64()?,
            min_descendant_epoch: self.u64()?,
            parent: self.label()?,
            node_type: to_node_type(self.u8()?)?,
            left_child: self.opt_label()?,
            right_child: self.opt_label()?,
            hash: AzksValue(self.array()?),
        })
    }
    /// A label as [`put_compact_label`] wrote it: only canonical ones decode, so each label
    /// has one encoding.
    fn compact_label(&mut self) -> Result<NodeLabel, Corrupt> {
        let len = u32::from(u16::from_be_bytes(self.array()?));
        if len > 256 {
            return Err(Corrupt);
        }
        let mut label_val = [0u8; 32];
        let bytes = self.take(label_bytes(len))?;
        label_val.get_mut(..bytes.len()).ok_or(Corrupt)?.copy_from_slice(bytes);
        let label = NodeLabel { label_val, label_len: len };
        if canonical(&label) { Ok(label) } else { Err(Corrupt) }
    }
    /// A LEB128 integer as [`put_varint`] wrote it (minimal, at most 64 bits).
    fn varint(&mut self) -> Result<u64, Corrupt> {
        let mut v = 0u64;
        for i in 0..10u32 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(Corrupt);
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                // A final zero byte after the first is a longer encoding of a shorter number.
                return if i > 0 && b == 0 { Err(Corrupt) } else { Ok(v) };
            }
        }
        Err(Corrupt)
    }
    /// A node version as [`put_compact_node`] wrote it, with the same `base`: a field
    /// written out that equals the base's, which the flag stands for, does not decode (one
    /// encoding).
    fn compact_node(
        &mut self,
        record_label: &NodeLabel,
        base: Option<&TreeNode>,
    ) -> Result<TreeNode, Corrupt> {
        let flags = self.u8()?;
        let allowed = if base.is_some() { FLAGS | SAME_PARENT | SAME_LEFT | SAME_RIGHT } else { FLAGS };
        if flags & !allowed != 0 {
            return Err(Corrupt);
        }
        let label = if flags & SAME_LABEL != 0 {
            *record_label
        } else {
            let label = self.compact_label()?;
            // The flag is the one encoding of a repeated label.
            if label == *record_label {
                return Err(Corrupt);
            }
            label
        };
        let last_epoch = self.varint()?;
        let min_descendant_epoch = self.varint()?;
        let parent = match base {
            Some(b) if flags & SAME_PARENT != 0 => b.parent,
            _ => {
                let parent = self.compact_label()?;
                if base.is_some_and(|b| b.parent == parent) {
                    return Err(Corrupt);
                }
                parent
            }
        };
        let mut child =
            |has: u8, same: u8, of_base: Option<Option<NodeLabel>>| match (flags & has, flags & same) {
                (0, 0) => Ok(None),
                (0, _) => Err(Corrupt),
                (_, 0) => {
                    let c = self.compact_label()?;
                    if of_base == Some(Some(c)) { Err(Corrupt) } else { Ok(Some(c)) }
                }
                _ => of_base.flatten().map(Some).ok_or(Corrupt),
            };
        let left_child = child(HAS_LEFT, SAME_LEFT, base.map(|b| b.left_child))?;
        let right_child = child(HAS_RIGHT, SAME_RIGHT, base.map(|b| b.right_child))?;
        Ok(TreeNode {
            label,
            last_epoch,
            min_descendant_epoch,
            parent,
            node_type: to_node_type((flags >> TYPE_SHIFT) & 3)?,
            left_child,
            right_child,
            hash: AzksValue(self.array()?),
        })
    }
    fn end(&self) -> Result<(), Corrupt> {
        if self.0.is_empty() { Ok(()) } else { Err(Corrupt) }
    }
}

/// The label of a tree node record's akd id (its storage type, length, 32-byte value).
fn id_label(id: &[u8]) -> Result<NodeLabel, Corrupt> {
    if id.len() != 37 {
        return Err(Corrupt);
    }
    let NodeKey(label) = TreeNodeWithPreviousValue::key_from_full_binary(id).map_err(|_| Corrupt)?;
    if canonical(&label) { Ok(label) } else { Err(Corrupt) }
}

/// Decodes what [`encode`] wrote for the record whose akd id is `id`.
pub fn decode(id: &[u8], data: &[u8]) -> Result<DbRecord, Corrupt> {
    let mut r = Reader(data);
    let record = match r.u8()? {
        AZKS => DbRecord::Azks(Azks { latest_epoch: r.u64()?, num_nodes: r.u64()? }),
        NODE => {
            let label = r.label()?;
            let latest_node = r.node()?;
            let previous_node = match r.u8()? {
                0 => None,
                1 => Some(r.node()?),
                _ => return Err(Corrupt),
            };
            DbRecord::TreeNode(TreeNodeWithPreviousValue { label, latest_node, previous_node })
        }
        NODE_COMPACT => {
            let label = r.compact_label()?;
            let latest_node = r.compact_node(&label, None)?;
            let previous_node = match r.u8()? {
                0 => None,
                1 => Some(r.compact_node(&label, None)?),
                _ => return Err(Corrupt),
            };
            DbRecord::TreeNode(TreeNodeWithPreviousValue { label, latest_node, previous_node })
        }
        NODE_COMPACT2 => {
            let label = id_label(id)?;
            let latest_node = r.compact_node(&label, None)?;
            let previous_node = match r.u8()? {
                0 => None,
                1 => Some(r.compact_node(&label, Some(&latest_node))?),
                _ => return Err(Corrupt),
            };
            DbRecord::TreeNode(TreeNodeWithPreviousValue { label, latest_node, previous_node })
        }
        _ => return Err(Corrupt),
    };
    r.end()?;
    Ok(record)
}

/// Decodes a value state row.
pub fn value_state(v: &StoredValue) -> Result<ValueState, Corrupt> {
    let mut r = Reader(&v.node_label);
    let label = r.label()?;
    r.end()?;
    Ok(ValueState {
        value: AkdValue(v.value.clone()),
        version: v.version,
        label,
        epoch: v.epoch,
        username: AkdLabel(v.label.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(b: u8, len: u32) -> NodeLabel {
        NodeLabel { label_val: [b; 32], label_len: len }
    }

    fn node(b: u8, children: bool) -> TreeNode {
        TreeNode {
            label: label(b, 7),
            last_epoch: 5,
            min_descendant_epoch: 2,
            parent: label(b ^ 1, 3),
            node_type: if children { TreeNodeType::Interior } else { TreeNodeType::Leaf },
            left_child: children.then(|| label(3, 8)),
            right_child: children.then(|| label(4, 8)),
            hash: AzksValue([b; 32]),
        }
    }

    /// A canonical label: `len` bits of a pattern, the rest zero.
    fn canon(seed: u8, len: u32) -> NodeLabel {
        let mut v = [0u8; 32];
        for (i, b) in v.iter_mut().enumerate() {
            let i = i as u32;
            if 8 * i + 8 <= len {
                *b = seed.wrapping_mul(31).wrapping_add(i as u8) | 1;
            } else if 8 * i < len {
                *b = 0xff << (8 - (len - 8 * i));
            }
        }
        NodeLabel { label_val: v, label_len: len }
    }

    /// A path node as akd writes them: an interior node at `depth` with a leaf and an
    /// interior child, and its previous version.
    fn path_node(depth: u32, epoch: u64) -> TreeNodeWithPreviousValue {
        let node = |e: u64| TreeNode {
            label: canon(1, depth),
            last_epoch: e,
            min_descendant_epoch: e / 2,
            parent: canon(1, depth - 1),
            node_type: TreeNodeType::Interior,
            left_child: Some(canon(2, 256)),
            right_child: Some(canon(3, (depth + 4).min(256))),
            hash: AzksValue([7; 32]),
        };
        TreeNodeWithPreviousValue {
            label: canon(1, depth),
            latest_node: node(epoch),
            previous_node: Some(node(epoch - 1)),
        }
    }

    /// The first compact form ([`NODE_COMPACT`]), as databases written before hold it.
    fn encode_v1(n: &TreeNodeWithPreviousValue) -> Vec<u8> {
        let mut out = vec![NODE_COMPACT];
        put_compact_label(&mut out, &n.label);
        put_compact_node(&mut out, &n.latest_node, &n.label, None);
        match &n.previous_node {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                put_compact_node(&mut out, p, &n.label, None);
            }
        }
        out
    }

    fn id_of(r: &DbRecord) -> Vec<u8> {
        r.get_full_binary_id()
    }

    #[test]
    fn tree_nodes_are_written_compactly_and_every_form_read() {
        for (depth, epoch) in [(1, 2), (7, 130), (20, 1 << 20), (252, u64::MAX)] {
            let record = DbRecord::TreeNode(path_node(depth, epoch));
            let id = id_of(&record);
            let compact = encode(&record).unwrap();
            assert_eq!(compact[0], NODE_COMPACT2);
            assert_eq!(decode(&id, &compact).unwrap(), record);
            let DbRecord::TreeNode(n) = &record else { unreachable!() };
            let fixed = encode_fixed(n);
            assert_eq!(decode(&id, &fixed).unwrap(), record, "the fixed form is still read");
            let v1 = encode_v1(n);
            assert_eq!(decode(&id, &v1).unwrap(), record, "the first compact form is still read");
            if depth == 20 {
                // The figures in the module comment (what an epoch writes per node).
                assert_eq!((fixed.len(), v1.len(), compact.len()), (428, 173, 124));
            }
            for cut in 0..compact.len() {
                assert!(decode(&id, &compact[..cut]).is_err());
            }
            let mut long = compact.clone();
            long.push(0);
            assert!(decode(&id, &long).is_err());
            // The label is the id's: another record's id, or one that is not a tree node's,
            // gives another record or none.
            let other = id_of(&DbRecord::TreeNode(path_node(depth + 1, epoch)));
            assert_ne!(decode(&other, &compact).ok(), Some(record.clone()));
            assert!(decode(&AZKS_ID, &compact).is_err());
            assert!(decode(&id[..36], &compact).is_err());
        }
        // A previous version under another parent, with other children (a leaf inserted
        // below): written out, and read back.
        let mut moved = path_node(30, 9);
        if let Some(p) = moved.previous_node.as_mut() {
            p.parent = canon(5, 29);
            p.left_child = Some(canon(6, 31));
            p.right_child = None;
        }
        let record = DbRecord::TreeNode(moved);
        assert_eq!(decode(&id_of(&record), &encode(&record).unwrap()).unwrap(), record);
        // A label with a bit past its length cannot be written compactly: the fixed form.
        let mut odd = path_node(9, 4);
        odd.latest_node.parent.label_val[31] = 1;
        let odd = DbRecord::TreeNode(odd);
        let bytes = encode(&odd).unwrap();
        assert_eq!(bytes[0], NODE);
        assert_eq!(decode(&id_of(&odd), &bytes).unwrap(), odd);
        // A root (no parent bits, empty label) and a leaf (no children, another label).
        let leaf = TreeNode {
            label: canon(9, 256),
            last_epoch: 0,
            min_descendant_epoch: 0,
            parent: canon(0, 0),
            node_type: TreeNodeType::Leaf,
            left_child: None,
            right_child: None,
            hash: AzksValue([1; 32]),
        };
        let record = DbRecord::TreeNode(TreeNodeWithPreviousValue {
            label: canon(8, 256),
            latest_node: leaf,
            previous_node: None,
        });
        assert_eq!(decode(&id_of(&record), &encode(&record).unwrap()).unwrap(), record);
    }

    proptest::proptest! {
        /// Any bytes, and any one-byte change of a valid record: a record or an error, never
        /// a panic; a compact record that decodes is the one encoding of what it decodes to.
        #[test]
        fn stored_bytes_never_panic_and_compact_ones_are_unique(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            depth in 1u32..256,
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let _ = decode(junk.get(..37).unwrap_or(&junk), &junk);
            let record = DbRecord::TreeNode(path_node(depth, u64::from(depth) * 977));
            let id = id_of(&record);
            for original in [encode(&record).unwrap(), encode_v1(&path_node(depth, u64::from(depth) * 977))] {
                let mut bytes = original.clone();
                let i = at % bytes.len();
                bytes[i] = byte;
                if let Ok(decoded) = decode(&id, &bytes) {
                    // The current form is the one encoding of what it decodes to; the first
                    // one too (its re-encoding, in its own form, gives the same bytes).
                    let DbRecord::TreeNode(n) = &decoded else { continue };
                    let again = if bytes[0] == NODE_COMPACT { encode_v1(n) } else { encode(&decoded).unwrap() };
                    proptest::prop_assert_eq!(again, bytes);
                }
            }
        }
    }

    #[test]
    fn a_compact_record_has_one_encoding() {
        let record = DbRecord::TreeNode(path_node(12, 300));
        let id = id_of(&record);
        let good = encode(&record).unwrap();
        // Layout: tag, the latest version's flags, last_epoch varint (2 bytes: 300), ...
        let flags = SAME_LABEL | HAS_LEFT | HAS_RIGHT | (3 << TYPE_SHIFT);
        assert_eq!(&good[..4], &[NODE_COMPACT2, flags, 0xac, 0x02]);
        // ... and the previous version, its parent and children the latest's: flagged.
        let prev = good.len() - 32 - 2 - 2 - 1;
        assert_eq!(good[prev - 1..prev + 1], [1, flags | SAME_PARENT | SAME_LEFT | SAME_RIGHT]);
        let mutate = |at: usize, b: u8| {
            let mut m = good.clone();
            m[at] = b;
            decode(&id, &m)
        };
        // Flags only a previous version may carry, on the latest.
        for bit in [SAME_PARENT, SAME_LEFT, SAME_RIGHT] {
            assert!(mutate(1, flags | bit).is_err());
        }
        // A child flagged as shared without being present.
        assert!(mutate(prev, good[prev] & !HAS_LEFT).is_err());
        // The shared parent written out instead of flagged.
        let DbRecord::TreeNode(n) = &record else { unreachable!() };
        let mut spelled = good[..prev].to_vec();
        spelled.push(good[prev] & !SAME_PARENT);
        spelled.extend_from_slice(&good[prev + 1..prev + 5]);
        put_compact_label(&mut spelled, &n.latest_node.parent);
        spelled.extend_from_slice(&good[prev + 5..]);
        assert!(decode(&id, &spelled).is_err());
        let mut unshared = n.clone();
        if let Some(p) = unshared.previous_node.as_mut() {
            p.parent = canon(9, 11);
        }
        // (With another parent, the same layout decodes.)
        let mut other = good[..prev].to_vec();
        other.push(good[prev] & !SAME_PARENT);
        other.extend_from_slice(&good[prev + 1..prev + 5]);
        put_compact_label(&mut other, &canon(9, 11));
        other.extend_from_slice(&good[prev + 5..]);
        assert_eq!(decode(&id, &other).unwrap(), DbRecord::TreeNode(unshared));
    }

    #[test]
    fn a_first_form_compact_record_has_one_encoding() {
        let DbRecord::TreeNode(n) = DbRecord::TreeNode(path_node(12, 300)) else { unreachable!() };
        let id = id_of(&DbRecord::TreeNode(n.clone()));
        let good = encode_v1(&n);
        // Layout: tag, label (2 + 2 bytes), flags, last_epoch varint (2 bytes: 300).
        assert_eq!(
            &good[..8],
            &[
                NODE_COMPACT,
                0,
                12,
                good[3],
                good[4],
                SAME_LABEL | HAS_LEFT | HAS_RIGHT | (3 << TYPE_SHIFT),
                0xac,
                0x02
            ]
        );
        let mutate = |at: usize, b: u8| {
            let mut m = good.clone();
            m[at] = b;
            decode(&id, &m)
        };
        // A bit set past the label's 12 bits.
        assert!(mutate(4, good[4] | 1).is_err());
        // A length over 256.
        assert!(mutate(1, 2).is_err());
        // Unknown flags, a bad node type.
        assert!(mutate(5, good[5] | 0x80).is_err());
        assert!(mutate(5, good[5] & !(3 << TYPE_SHIFT)).is_err());
        // A longer encoding of the same epoch (300 as three bytes).
        let mut long = good.clone();
        long.splice(6..8, [0xac, 0x82, 0x00]);
        assert!(decode(&id, &long).is_err());
        // The record's own label written out instead of flagged.
        let mut spelled = good[..5].to_vec();
        spelled.push(good[5] & !SAME_LABEL);
        spelled.extend_from_slice(&good[1..5]);
        spelled.extend_from_slice(&good[6..]);
        assert!(decode(&id, &spelled).is_err());
    }

    #[test]
    fn records_round_trip_and_corrupt_ones_are_errors() {
        let records = [
            DbRecord::Azks(Azks { latest_epoch: 9, num_nodes: u64::MAX }),
            DbRecord::TreeNode(TreeNodeWithPreviousValue {
                label: label(1, 7),
                latest_node: node(1, true),
                previous_node: Some(node(2, false)),
            }),
            DbRecord::TreeNode(TreeNodeWithPreviousValue {
                label: label(5, 256),
                latest_node: node(5, false),
                previous_node: None,
            }),
        ];
        for r in records {
            let id = id_of(&r);
            let bytes = encode(&r).unwrap();
            assert_eq!(decode(&id, &bytes).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(decode(&id, &bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(decode(&id, &long).is_err());
        }
        let v = ValueState {
            value: AkdValue(vec![1, 2]),
            version: 3,
            label: label(6, 256),
            epoch: 4,
            username: AkdLabel(b"x".to_vec()),
        };
        assert_eq!(value_state(&stored_value(&v)).unwrap(), v);
    }
}
