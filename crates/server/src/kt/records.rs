//! How akd's records are stored: the azks and tree nodes as `(id, data)` rows keyed by
//! akd's own binary id, value states as rows of their own (queried by label). The encoding
//! is ours (akd leaves it to each backend): big-endian integers, fixed-size labels and
//! digests, a tag byte per optional field; a record that does not decode is a storage error,
//! never a panic.

use akd::storage::types::{DbRecord, ValueState};
use akd::tree_node::{TreeNode, TreeNodeType, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Azks, AzksValue, NodeLabel};

const AZKS: u8 = 1;
const NODE: u8 = 2;

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
        DbRecord::TreeNode(n) => {
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
            Some(out)
        }
        DbRecord::ValueState(_) => None,
    }
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
            node_type: match self.u8()? {
                1 => TreeNodeType::Leaf,
                2 => TreeNodeType::Root,
                3 => TreeNodeType::Interior,
                _ => return Err(Corrupt),
            },
            left_child: self.opt_label()?,
            right_child: self.opt_label()?,
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
