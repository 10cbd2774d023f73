//! How akd's records are stored: the azks and tree nodes as `(id, data)` rows keyed by
//! akd's own binary id, value states as rows of their own (queried by label). The encoding
//! is ours (akd leaves it to each backend); a record that does not decode is a storage
//! error, never a panic.
//!
//! Tree nodes are written compactly ([`NODE_COMPACT`]): a node label keeps only the bytes
//! its length covers (a node at depth 20 has 3 significant bytes of 32), epochs are
//! LEB128, the node's own label is not repeated, and one flags byte says which optional
//! fields follow. Every epoch rewrites each node on its updates' paths, so the bytes a node
//! takes are the bytes an epoch writes: a node at depth 20 with a leaf child and its
//! previous version takes 173 bytes against 428 in the fixed-size form ([`NODE`],
//! big-endian integers and 32-byte labels), which is still read (databases written before)
//! and still written for a label with bits set past its length, which the compact form
//! cannot hold.

use akd::storage::types::{DbRecord, ValueState};
use akd::tree_node::{TreeNode, TreeNodeType, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, AzksValue, NodeLabel};
use tacit_transparency::put_varint;

const AZKS: u8 = 1;
/// A tree node with fixed-size fields.
const NODE: u8 = 2;
/// A tree node in the compact form.
const NODE_COMPACT: u8 = 3;

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

fn put_compact_node(out: &mut Vec<u8>, n: &TreeNode, record_label: &NodeLabel) {
    let same = n.label == *record_label;
    let flag = |on: bool, bit: u8| if on { bit } else { 0 };
    let flags = flag(same, SAME_LABEL)
        | flag(n.left_child.is_some(), HAS_LEFT)
        | flag(n.right_child.is_some(), HAS_RIGHT)
        | (node_type(n.node_type) << TYPE_SHIFT);
    out.push(flags);
    if !same {
        put_compact_label(out, &n.label);
    }
    put_varint(out, n.last_epoch);
    put_varint(out, n.min_descendant_epoch);
    put_compact_label(out, &n.parent);
    for child in [&n.left_child, &n.right_child].into_iter().flatten() {
        put_compact_label(out, child);
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
            let mut out = Vec::with_capacity(2 * 100);
            out.push(NODE_COMPACT);
            put_compact_label(&mut out, &n.label);
            put_compact_node(&mut out, &n.latest_node, &n.label);
            match &n.previous_node {
                None => out.push(0),
                Some(p) => {
                    out.push(1);
                    put_compact_node(&mut out, p, &n.label);
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
    match decode(data) {
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
    fn compact_node(&mut self, record_label: &NodeLabel) -> Result<TreeNode, Corrupt> {
        let flags = self.u8()?;
        if flags & !FLAGS != 0 {
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
        Ok(TreeNode {
            label,
            last_epoch: self.varint()?,
            min_descendant_epoch: self.varint()?,
            parent: self.compact_label()?,
            node_type: to_node_type(flags >> TYPE_SHIFT)?,
            left_child: if flags & HAS_LEFT != 0 { Some(self.compact_label()?) } else { None },
            right_child: if flags & HAS_RIGHT != 0 { Some(self.compact_label()?) } else { None },
            hash: AzksValue(self.array()?),
        })
    }
    fn end(&self) -> Result<(), Corrupt> {
        if self.0.is_empty() { Ok(()) } else { Err(Corrupt) }
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(data: &[u8]) -> Result<DbRecord, Corrupt> {
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
            let latest_node = r.compact_node(&label)?;
            let previous_node = match r.u8()? {
                0 => None,
                1 => Some(r.compact_node(&label)?),
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

    #[test]
    fn tree_nodes_are_written_compactly_and_both_forms_read() {
        for (depth, epoch) in [(1, 2), (7, 130), (20, 1 << 20), (252, u64::MAX)] {
            let record = DbRecord::TreeNode(path_node(depth, epoch));
            let compact = encode(&record).unwrap();
            assert_eq!(compact[0], NODE_COMPACT);
            assert_eq!(decode(&compact).unwrap(), record);
            let DbRecord::TreeNode(n) = &record else { unreachable!() };
            let fixed = encode_fixed(n);
            assert_eq!(decode(&fixed).unwrap(), record, "the fixed form is still read");
            if depth == 20 {
                // The figure in the module comment (what an epoch writes per node).
                assert_eq!((fixed.len(), compact.len()), (428, 173));
            }
            for cut in 0..compact.len() {
                assert!(decode(&compact[..cut]).is_err());
            }
            let mut long = compact.clone();
            long.push(0);
            assert!(decode(&long).is_err());
        }
        // A label with a bit past its length cannot be written compactly: the fixed form.
        let mut odd = path_node(9, 4);
        odd.latest_node.parent.label_val[31] = 1;
        let bytes = encode(&DbRecord::TreeNode(odd.clone())).unwrap();
        assert_eq!(bytes[0], NODE);
        assert_eq!(decode(&bytes).unwrap(), DbRecord::TreeNode(odd));
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
        assert_eq!(decode(&encode(&record).unwrap()).unwrap(), record);
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
            let _ = decode(&junk);
            let mut bytes = encode(&DbRecord::TreeNode(path_node(depth, u64::from(depth) * 977))).unwrap();
            let i = at % bytes.len();
            bytes[i] = byte;
            if let Ok(record) = decode(&bytes) {
                proptest::prop_assert_eq!(encode(&record).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn a_compact_record_has_one_encoding() {
        let good = encode(&DbRecord::TreeNode(path_node(12, 300))).unwrap();
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
            decode(&m)
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
        assert!(decode(&long).is_err());
        // The record's own label written out instead of flagged.
        let mut spelled = good[..5].to_vec();
        spelled.push(good[5] & !SAME_LABEL);
        spelled.extend_from_slice(&good[1..5]);
        spelled.extend_from_slice(&good[6..]);
        assert!(decode(&spelled).is_err());
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
            let bytes = encode(&r).unwrap();
            assert_eq!(decode(&bytes).unwrap(), r);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err());
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(decode(&long).is_err());
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
