//! The Merkle tree of a node's key commitments (v2, docs/delivery.md "Key commitments"): RFC 9162
//! §2.1.1 hashing (leaf = SHA-256(0x00 || key digest), node = SHA-256(0x01 || left || right)),
//! the tree of a batch with each leaf's inclusion path, and the root an inclusion path gives
//! (§2.1.3.2). The reference is src/delivery/commitment.ts (`merkleTree`, `rootFromPath`, with
//! RFC 6962 vectors as known answers); here because a KMS checks a path per key pushed (13
//! hashes at 2^12 keys per batch) and node.js's createHash cost more than the hashing.
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(digest);
    h.finalize().into()
}

pub fn node_hash(l: &Hash, r: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// Largest power of two strictly below n (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The tree hash of `leaves` (leaf hashes) and each leaf's inclusion path, siblings from the leaf
/// up. `None` for no leaves.
pub fn tree(leaves: &[Hash]) -> Option<(Hash, Vec<Vec<Hash>>)> {
    fn build(leaves: &[Hash], lo: usize, hi: usize, paths: &mut [Vec<Hash>]) -> Hash {
        if hi - lo == 1 {
            return leaves[lo];
        }
        let k = lo + split(hi - lo);
        let l = build(leaves, lo, k, paths);
        let r = build(leaves, k, hi, paths);
        for p in &mut paths[lo..k] {
            p.push(r);
        }
        for p in &mut paths[k..hi] {
            p.push(l);
        }
        node_hash(&l, &r)
    }
    if leaves.is_empty() {
        return None;
    }
    let mut paths = vec![Vec::new(); leaves.len()];
    let root = build(leaves, 0, leaves.len(), &mut paths);
    Some((root, paths))
}

/// The root that `path` gives for `leaf` at `index` of a tree of `size` leaves, or `None` when
/// the path cannot belong to such a tree (RFC 9162 §2.1.3.2, step by step).
pub fn root_from_path(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return None;
        }
        if fn_ % 2 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ % 2 == 0 {
                while fn_ % 2 == 0 && fn_ != 0 {
                    fn_ /= 2;
                    sn /= 2;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ /= 2;
        sn /= 2;
    }
    (sn == 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> Hash {
        leaf_hash(&Sha256::digest(i.to_be_bytes()).into())
    }

    /// RFC 6962 §2.1 by its recursive definition, the obvious way.
    fn mth(d: &[Hash]) -> Hash {
        if d.len() == 1 {
            return d[0];
        }
        let k = split(d.len());
        node_hash(&mth(&d[..k]), &mth(&d[k..]))
    }

    #[test]
    fn every_path_of_every_tree_up_to_70_leaves_gives_the_root_and_only_there() {
        for n in 1..=70u32 {
            let leaves: Vec<Hash> = (0..n).map(h).collect();
            let (root, paths) = tree(&leaves).unwrap();
            assert_eq!(root, mth(&leaves), "n {n}");
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(root_from_path(&leaves[i], i as u64, n as u64, p), Some(root), "n {n} leaf {i}");
                // Another leaf, index or size does not give the root.
                assert_ne!(root_from_path(&h(1000), i as u64, n as u64, p), Some(root));
                if n > 1 {
                    assert_ne!(root_from_path(&leaves[i], ((i + 1) % n as usize) as u64, n as u64, p), Some(root), "n {n} leaf {i}");
                }
                // (A size that shares the path's shape gives the same root: the size is in the signed
                // message, not checked here.)
            }
        }
        assert!(tree(&[]).is_none());
        assert_eq!(root_from_path(&h(0), 3, 3, &[]), None);
    }

    #[test]
    fn rfc6962_leaf_and_node_hashes() {
        // Certificate Transparency's reference vectors: the roots of the first one and two leaves
        // of the data "", 0x00 (as in test/delivery/commitment.test.ts).
        let l0: Hash = Sha256::digest([0u8]).into();
        let l1: Hash = Sha256::digest([0u8, 0x00]).into();
        assert_eq!(hex(&tree(&[l0]).unwrap().0), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
        assert_eq!(hex(&tree(&[l0, l1]).unwrap().0), "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
