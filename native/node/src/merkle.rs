//! napi adapters for qkd-store's key-commitment hashing (merkle.rs, the key digest); the
//! reference is src/delivery/commitment.ts. Runs on the JS thread (a KMS checks one path per key).
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_store::merkle;

fn bad(msg: String) -> Error {
    Error::new(Status::InvalidArg, format!("COMMITMENT_BAD_ARGUMENT: {msg}"))
}

fn hashes(b: &[u8], what: &str) -> Result<Vec<merkle::Hash>> {
    if b.len() % 32 != 0 {
        return Err(bad(format!("{what} holds {} bytes, not a multiple of 32", b.len())));
    }
    Ok(b.chunks_exact(32).map(|c| c.try_into().unwrap()).collect())
}

/// SHA-256("qkd-store/v1" 0 key_stream_id 0 index_be32 key): what a commitment commits to.
#[napi(js_name = "commitmentKeyDigest")]
pub fn commitment_key_digest(key_stream_id: String, index: u32, key: Uint8Array) -> Buffer {
    Buffer::from(qkd_store::digest(&key_stream_id, index, &key).to_vec())
}

/// The root an inclusion path (siblings, 32 bytes each, concatenated) gives for the key digest at
/// `index` of a batch of `size` (the leaf hash taken here), or null when it cannot fit.
#[napi(js_name = "merkleRootFromPath")]
pub fn merkle_root_from_path(digest: Uint8Array, index: u32, size: u32, path: Uint8Array) -> Result<Option<Buffer>> {
    let d: merkle::Hash = digest.as_ref().try_into().map_err(|_| bad(format!("a key digest is 32 bytes, got {}", digest.len())))?;
    let path = hashes(&path, "path")?;
    Ok(merkle::root_from_path(&merkle::leaf_hash(&d), index as u64, size as u64, &path).map(|r| Buffer::from(r.to_vec())))
}

/// A batch's tree over key digests (32 bytes each, concatenated): its root, and every leaf's
/// inclusion path concatenated in `paths`, leaf i's siblings ending at hash `ends[i]`.
#[napi(object)]
pub struct MerkleBatch {
    pub root: Buffer,
    pub paths: Buffer,
    pub ends: Vec<u32>,
}

#[napi(js_name = "merkleTreeOfDigests")]
pub fn merkle_tree_of_digests(digests: Uint8Array) -> Result<MerkleBatch> {
    let leaves: Vec<merkle::Hash> = hashes(&digests, "digests")?.iter().map(merkle::leaf_hash).collect();
    let (root, paths) = merkle::tree(&leaves).ok_or_else(|| bad("a Merkle tree needs at least one leaf".into()))?;
    let mut flat = Vec::with_capacity(paths.iter().map(|p| p.len() * 32).sum());
    let mut ends = Vec::with_capacity(paths.len());
    for p in &paths {
        for h in p {
            flat.extend_from_slice(h);
        }
        ends.push((flat.len() / 32) as u32);
    }
    Ok(MerkleBatch { root: Buffer::from(root.to_vec()), paths: Buffer::from(flat), ends })
}
