//! qkd-auth: information-theoretically secure (Wegman–Carter) authentication of the classical
//! channel between Alice's and Bob's nodes.
//!
//! Construction (Wegman & Carter, JCSS 22, 1981, Sec. 3; Stinson, "Universal hashing and
//! authentication codes", Des. Codes Cryptogr. 4, 1994, Thm. 6.1):
//!   tag(d, n, A, D) = H_k(A, D) XOR P(d, n)
//! - `H_k` is the epsilon-almost-XOR-universal polynomial hash over GF(2^128) of [`gf128`], with a
//!   128-bit hash key `k` taken from the first 16 bytes of the pre-shared secret and kept for the
//!   life of the pool (it stays hidden because every tag is one-time-padded; Portmann, "Key
//!   recycling in authentication", IEEE Trans. Inf. Theory 60(7), 2014).
//! - `P(d, n)` is a fresh 128-bit one-time pad: bytes `[32n + 16d, 32n + 16d + 16)` of the OTP key
//!   stream (the rest of the pre-shared secret followed by every `replenish`ed byte, in order).
//!   `d` is the direction (0 = Alice->Bob, 1 = Bob->Alice), `n` the per-direction sequence number.
//!   Deriving the offset from (d, n) keeps both sides in sync without any extra message.
//!
//! Forgery probability per verification attempt <= epsilon = l / 2^128 (l = hashed blocks),
//! so <= q * l_max / 2^128 over q attempts.
//!
//! Rules enforced here: a pad is used at most once for signing (send sequence strictly increasing,
//! reserved on disk before use when a state file is attached), a received sequence number must be
//! strictly greater than the last accepted one (replay / reorder), every pad is zeroised as soon
//! as it is used or skipped, and key material lives in zeroising containers.
//!
//! The state file (hash key, remaining pads, counters) is wrapped at rest with AES-256-GCM
//! (NIST SP 800-38D) under a 32-byte state key the caller supplies, the same construction the KMS
//! key store uses (native/store): fresh 96-bit random nonce per write, the file's magic as
//! associated data. No code path writes the hash key or a pad to disk in the clear.
pub mod gf128;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

pub use gf128::Backend;

/// Bits of one-time pad consumed per authenticated message.
pub const TAG_BITS: u64 = 128;
/// Largest message (A + D bytes) we authenticate: 16 MiB keeps epsilon <= 2^-107.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Send sequence numbers reserved on disk at a time (wasted at most once per crash).
pub const SEND_RESERVATION: u64 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The tag does not match: tampered, truncated or forged message.
    TagMismatch,
    /// Sequence number not greater than the last accepted one: replayed or reordered.
    Replay { seq: u64, last: u64 },
    /// The pad for this message is no longer in the pool (older than what was discarded).
    TooOld { seq: u64 },
    /// Not enough key in the pool: replenish.
    KeyExhausted { needed_end: u64, available_end: u64 },
    /// Sign called with a sequence number already used.
    SeqReuse { seq: u64, next: u64 },
    /// Message larger than MAX_MESSAGE_BYTES.
    TooLarge { bytes: usize },
    /// Bad pre-shared secret or state file.
    BadKey(String),
    Io(String),
}

impl AuthError {
    /// Stable code the TypeScript side switches on.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::TagMismatch => "AUTH_TAG_MISMATCH",
            AuthError::Replay { .. } => "AUTH_REPLAY",
            AuthError::TooOld { .. } => "AUTH_TOO_OLD",
            AuthError::KeyExhausted { .. } => "AUTH_KEY_EXHAUSTED",
            AuthError::SeqReuse { .. } => "AUTH_SEQ_REUSE",
            AuthError::TooLarge { .. } => "AUTH_TOO_LARGE",
            AuthError::BadKey(_) => "AUTH_BAD_KEY",
            AuthError::Io(_) => "AUTH_IO",
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::TagMismatch => write!(f, "authentication tag mismatch: the message was tampered with, truncated or forged; it was discarded"),
            AuthError::Replay { seq, last } => write!(f, "sequence number {seq} is not after the last accepted {last}: replayed or reordered message discarded"),
            AuthError::TooOld { seq } => write!(f, "sequence number {seq} refers to key already discarded: stale or replayed message discarded"),
            AuthError::KeyExhausted { needed_end, available_end } => write!(f, "authentication key pool exhausted (needs key up to byte {needed_end}, has up to {available_end}): replenish the pool with generated key or a new pre-shared secret"),
            AuthError::SeqReuse { seq, next } => write!(f, "send sequence number {seq} already used (next free is {next}): refusing to reuse a one-time pad"),
            AuthError::TooLarge { bytes } => write!(f, "message of {bytes} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit of the MAC: split it"),
            AuthError::BadKey(m) => write!(f, "bad authentication key material: {m}"),
            AuthError::Io(m) => write!(f, "authentication state file: {m}"),
        }
    }
}
impl std::error::Error for AuthError {}

/// The one-time-pad key stream: an append-only sequence of secret bytes, addressed by absolute
/// offset, of which only the window `[base, base + buf.len())` is still held.
pub struct KeyPool {
    buf: Zeroizing<Vec<u8>>,
    base: u64,
}

impl KeyPool {
    pub fn new(initial: &[u8]) -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(initial.len()));
        buf.extend_from_slice(initial);
        KeyPool { buf, base: 0 }
    }
    /// Absolute offset one past the last byte held.
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Appends key bytes (both sides must append the same bytes in the same order).
    pub fn replenish(&mut self, bytes: &[u8]) {
        if self.buf.capacity() - self.buf.len() < bytes.len() {
            // Grow by hand: Vec's own realloc would free the old block without zeroising it.
            let mut grown = Zeroizing::new(Vec::with_capacity((self.buf.len() + bytes.len()).max(self.buf.len() * 2)));
            grown.extend_from_slice(&self.buf);
            self.buf = grown; // the old one is zeroised on drop
        }
        self.buf.extend_from_slice(bytes);
    }
    /// Copies the 16 pad bytes at absolute `offset` out and zeroises them in the pool.
    fn take16(&mut self, offset: u64, seq: u64) -> Result<Zeroizing<[u8; 16]>, AuthError> {
        if offset < self.base {
            return Err(AuthError::TooOld { seq });
        }
        if offset + 16 > self.end() {
            return Err(AuthError::KeyExhausted { needed_end: offset + 16, available_end: self.end() });
        }
        let i = (offset - self.base) as usize;
        let mut out = Zeroizing::new([0u8; 16]);
        out.copy_from_slice(&self.buf[i..i + 16]);
        self.buf[i..i + 16].zeroize();
        Ok(out)
    }
    /// Reads (without consuming) the pad at `offset`, for verification before acceptance.
    fn peek16(&self, offset: u64, seq: u64) -> Result<Zeroizing<[u8; 16]>, AuthError> {
        if offset < self.base {
            return Err(AuthError::TooOld { seq });
        }
        if offset + 16 > self.end() {
            return Err(AuthError::KeyExhausted { needed_end: offset + 16, available_end: self.end() });
        }
        let i = (offset - self.base) as usize;
        let mut out = Zeroizing::new([0u8; 16]);
        out.copy_from_slice(&self.buf[i..i + 16]);
        Ok(out)
    }
    fn zero16(&mut self, offset: u64) {
        if offset >= self.base && offset + 16 <= self.end() {
            let i = (offset - self.base) as usize;
            self.buf[i..i + 16].zeroize();
        }
    }
    /// Zeroises and forgets everything below absolute `floor`. Compacts lazily (the shift is
    /// O(len)), so only when the dead prefix is large.
    fn discard_below(&mut self, floor: u64, force: bool) {
        if floor <= self.base {
            return;
        }
        let n = ((floor - self.base) as usize).min(self.buf.len());
        self.buf[..n].zeroize();
        if force || n >= 64 * 1024 || n * 2 >= self.buf.len() {
            self.buf.drain(..n);
            self.base += n as u64;
        }
    }
}

/// Counters for accounting (no key material).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    pub signed: u64,
    pub verified: u64,
    pub rejected: u64,
    /// Pad bits used by signing and verifying (TAG_BITS per message).
    pub used_bits: u64,
    /// Pad bits still held and not yet used or skipped, from the lowest live slot on.
    pub available_bits: u64,
    /// Bits appended by `replenish` since the pool was created.
    pub replenished_bits: u64,
    pub next_send_seq: u64,
    /// Last accepted receive sequence number, or u64::MAX if none yet.
    pub last_recv_seq: u64,
}

/// One side's Wegman–Carter authenticator: hash key, pad stream, sequence state.
pub struct Authenticator {
    hash_key: Zeroizing<u128>,
    pool: KeyPool,
    my_dir: u8,
    next_send: u64,
    send_reserved: u64,
    last_recv: Option<u64>,
    stats: AuthStats,
    backend: Backend,
    state_path: Option<PathBuf>,
    /// Key wrapping the state file (AES-256-GCM); required with a state file.
    state_key: Option<Zeroizing<[u8; 32]>>,
}

impl Drop for Authenticator {
    fn drop(&mut self) {
        // hash_key and pool zeroise themselves; nothing else is secret.
    }
}

fn slot(dir: u8, seq: u64) -> u64 {
    seq.wrapping_mul(32) + 16 * dir as u64
}

impl Authenticator {
    /// From the pre-shared secret: 16 bytes of hash key, then the initial pad stream.
    /// `my_dir`: 0 for Alice (sends on direction 0), 1 for Bob.
    pub fn new(psk: &[u8], my_dir: u8) -> Result<Self, AuthError> {
        if my_dir > 1 {
            return Err(AuthError::BadKey("direction must be 0 (Alice) or 1 (Bob)".into()));
        }
        if psk.len() < 16 + 32 {
            return Err(AuthError::BadKey(format!("pre-shared secret has {} bytes; at least 48 needed (16 hash key + pads)", psk.len())));
        }
        let k = Zeroizing::new(u128::from_be_bytes(psk[..16].try_into().unwrap()));
        if *k == 0 {
            return Err(AuthError::BadKey("hash key is all zero: the pre-shared secret is not random".into()));
        }
        Ok(Authenticator {
            hash_key: k,
            pool: KeyPool::new(&psk[16..]),
            my_dir,
            next_send: 0,
            send_reserved: 0,
            last_recv: None,
            stats: AuthStats::default(),
            backend: Backend::detect(),
            state_path: None,
            state_key: None,
        })
    }

    /// Forces the portable GF(2^128) path (tests compare it with the fast one).
    pub fn set_backend(&mut self, b: Backend) {
        self.backend = b;
    }

    pub fn direction(&self) -> u8 {
        self.my_dir
    }
    pub fn next_send_seq(&self) -> u64 {
        self.next_send
    }

    /// Attaches a state file: from now on send sequence numbers are reserved in it before use,
    /// so a crash never reuses a pad. The file is wrapped under `state_key` (32 bytes, AES-256-GCM).
    /// Writes it at once.
    pub fn attach_state_file(&mut self, path: &Path, state_key: &[u8]) -> Result<(), AuthError> {
        self.state_key = Some(state_key_of(state_key)?);
        self.state_path = Some(path.to_path_buf());
        self.save()
    }

    /// Appends generated key to the pad stream (same bytes, same order on both sides).
    pub fn replenish(&mut self, bytes: &[u8]) {
        self.pool.replenish(bytes);
        self.stats.replenished_bits += bytes.len() as u64 * 8;
    }

    fn floor(&self) -> u64 {
        let peer = 1 - self.my_dir;
        let recv_next = self.last_recv.map_or(0, |l| l + 1);
        slot(self.my_dir, self.next_send).min(slot(peer, recv_next))
    }

    /// Tag for the message with send sequence number `seq` (must be >= next_send_seq).
    pub fn sign(&mut self, seq: u64, aad: &[u8], data: &[u8]) -> Result<[u8; 16], AuthError> {
        if seq < self.next_send {
            return Err(AuthError::SeqReuse { seq, next: self.next_send });
        }
        if aad.len() + data.len() > MAX_MESSAGE_BYTES {
            return Err(AuthError::TooLarge { bytes: aad.len() + data.len() });
        }
        let off = slot(self.my_dir, seq);
        if off + 16 > self.pool.end() {
            return Err(AuthError::KeyExhausted { needed_end: off + 16, available_end: self.pool.end() });
        }
        if self.state_path.is_some() && seq >= self.send_reserved {
            // Write-ahead: the reservation must be durable before any tag with this pad leaves.
            self.send_reserved = seq + SEND_RESERVATION;
            self.save_inner(self.send_reserved)?;
        }
        // Burn every pad of ours skipped over (seq > next_send), then take this one.
        for s in self.next_send..seq.min(self.next_send + 1_000_000) {
            self.pool.zero16(slot(self.my_dir, s));
        }
        let pad = self.pool.take16(off, seq)?;
        let h = gf128::poly_hash(*self.hash_key, aad, data, self.backend);
        let tag = (h ^ u128::from_be_bytes(*pad)).to_be_bytes();
        self.next_send = seq + 1;
        self.stats.signed += 1;
        self.stats.used_bits += TAG_BITS;
        let f = self.floor();
        self.pool.discard_below(f, false);
        Ok(tag)
    }

    /// Checks a received message with the peer's sequence number `seq`. On success the pad is
    /// burned and `seq` becomes the last accepted; on failure nothing changes but the counter.
    pub fn verify(&mut self, seq: u64, aad: &[u8], data: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        let r = self.verify_inner(seq, aad, data, tag);
        if r.is_err() {
            self.stats.rejected += 1;
        }
        r
    }

    fn verify_inner(&mut self, seq: u64, aad: &[u8], data: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        if let Some(last) = self.last_recv {
            if seq <= last {
                return Err(AuthError::Replay { seq, last });
            }
        }
        if aad.len() + data.len() > MAX_MESSAGE_BYTES {
            return Err(AuthError::TooLarge { bytes: aad.len() + data.len() });
        }
        if tag.len() != 16 {
            return Err(AuthError::TagMismatch);
        }
        let peer = 1 - self.my_dir;
        let off = slot(peer, seq);
        let pad = self.pool.peek16(off, seq)?;
        let h = gf128::poly_hash(*self.hash_key, aad, data, self.backend);
        let expect = Zeroizing::new((h ^ u128::from_be_bytes(*pad)).to_be_bytes());
        // Constant-time comparison: no early exit on the first differing byte.
        let mut diff = 0u8;
        for i in 0..16 {
            diff |= expect[i] ^ tag[i];
        }
        if diff != 0 {
            return Err(AuthError::TagMismatch);
        }
        // Accept: burn this pad and all the peer's pads skipped over.
        let from = self.last_recv.map_or(0, |l| l + 1);
        for s in from.max(seq.saturating_sub(1_000_000))..=seq {
            self.pool.zero16(slot(peer, s));
        }
        self.last_recv = Some(seq);
        self.stats.verified += 1;
        self.stats.used_bits += TAG_BITS;
        let f = self.floor();
        self.pool.discard_below(f, false);
        Ok(())
    }

    pub fn stats(&self) -> AuthStats {
        let mut s = self.stats.clone();
        s.next_send_seq = self.next_send;
        s.last_recv_seq = self.last_recv.unwrap_or(u64::MAX);
        // Live bytes: from the floor to the end, minus nothing (used slots above the floor are
        // few: at most the imbalance between directions).
        s.available_bits = self.pool.end().saturating_sub(self.floor()) * 8;
        s
    }

    /// Messages that can still be sent before the pool runs dry (by the sender's own slots).
    pub fn messages_left(&self) -> u64 {
        let off = slot(self.my_dir, self.next_send);
        if off + 16 > self.pool.end() {
            0
        } else {
            (self.pool.end() - off - 16) / 32 + 1
        }
    }

    // ------------------------------------------------------------------ persistence
    //
    // State file (written to <path>.tmp, fsynced, renamed over <path>):
    //   0  magic "QKDWCA02"          8
    //   8  nonce                    12
    //  20  AES-256-GCM(state key, nonce, aad = magic) of the record below, then its 16-byte tag
    // Record layout (little-endian; also the whole of a legacy unwrapped "QKDWCA01" file):
    //   0  magic "QKDWCA01"          8
    //   8  direction u8, 7 pad       8
    //  16  next_send (reserved) u64  8
    //  24  last_recv u64 (MAX=none)  8
    //  32  base u64                  8
    //  40  signed, verified, rejected, used_bits, replenished_bits  5 x u64
    //  80  hash key 16 bytes
    //  96  pool length u64, then the pool bytes (used pads already zeroed)
    const MAGIC: &'static [u8; 8] = b"QKDWCA01";
    const MAGIC_WRAPPED: &'static [u8; 8] = b"QKDWCA02";

    /// Writes the state file now (at a block boundary, after replenishing, before exit).
    pub fn save(&mut self) -> Result<(), AuthError> {
        // A clean save records exactly the next free sequence number; the next sign reserves again.
        self.send_reserved = self.next_send;
        self.save_inner(self.next_send)
    }

    fn save_inner(&mut self, next_send_on_disk: u64) -> Result<(), AuthError> {
        self.write_state(next_send_on_disk, false)
    }

    /// The state record (clear text: only ever written wrapped, see `write_state`).
    fn record(&mut self, next_send_on_disk: u64) -> Zeroizing<Vec<u8>> {
        let f = self.floor();
        self.pool.discard_below(f, true);
        let mut out = Zeroizing::new(Vec::with_capacity(104 + self.pool.buf.len()));
        out.extend_from_slice(Self::MAGIC);
        out.extend_from_slice(&[self.my_dir, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&next_send_on_disk.to_le_bytes());
        out.extend_from_slice(&self.last_recv.unwrap_or(u64::MAX).to_le_bytes());
        out.extend_from_slice(&self.pool.base.to_le_bytes());
        for v in [self.stats.signed, self.stats.verified, self.stats.rejected, self.stats.used_bits, self.stats.replenished_bits] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.hash_key.to_be_bytes());
        out.extend_from_slice(&(self.pool.buf.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.pool.buf);
        out
    }

    /// Writes the wrapped state. `scrub_old`: overwrite the file being replaced with zeros first
    /// (migration of a legacy unwrapped file, whose hash key and pads must not stay on disk).
    fn write_state(&mut self, next_send_on_disk: u64, scrub_old: bool) -> Result<(), AuthError> {
        let Some(path) = self.state_path.clone() else { return Ok(()) };
        let Some(key) = self.state_key.as_ref() else {
            return Err(AuthError::BadKey("no state key: the state file is only written wrapped".into()));
        };
        let cipher = Aes256Gcm::new_from_slice(&key[..]).map_err(|_| AuthError::BadKey("state key must be 32 bytes".into()))?;
        let out = self.record(next_send_on_disk);
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| AuthError::Io(format!("no randomness for the state file nonce: {e}")))?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &out[..], aad: Self::MAGIC_WRAPPED })
            .map_err(|_| AuthError::Io("cannot wrap the state".into()))?;
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| AuthError::Io(format!("{}: {e}", path.display()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut fh = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
            fh.write_all(Self::MAGIC_WRAPPED).map_err(io)?;
            fh.write_all(&nonce).map_err(io)?;
            fh.write_all(&sealed).map_err(io)?;
            fh.sync_all().map_err(io)?;
        }
        if scrub_old {
            // Overwrite the legacy clear-text file in place before the wrapped one replaces it:
            // after a rename its blocks could no longer be reached. A crash between the two
            // leaves a zeroed <path> and a complete <path>.tmp, which `load` takes.
            if let Ok(len) = fs::metadata(&path).map(|m| m.len()) {
                let mut fh = fs::OpenOptions::new().write(true).open(&path).map_err(io)?;
                fh.write_all(&vec![0u8; len as usize]).map_err(io)?;
                fh.sync_all().map_err(io)?;
            }
        }
        fs::rename(&tmp, &path).map_err(io)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Reopens a state file written by `save`/`attach_state_file`, unwrapping it with
    /// `state_key`. The send sequence resumes at the reserved number, so no pad is ever used twice
    /// even after a crash. A legacy unwrapped file (magic QKDWCA01) is read once and at once
    /// rewritten wrapped, its clear-text bytes overwritten.
    pub fn load(path: &Path, state_key: &[u8]) -> Result<Self, AuthError> {
        Self::load_inner(path, state_key, true)
    }

    fn load_inner(path: &Path, state_key: &[u8], allow_tmp: bool) -> Result<Self, AuthError> {
        let key = state_key_of(state_key)?;
        let raw = Zeroizing::new(fs::read(path).map_err(|e| AuthError::Io(format!("{}: {e}", path.display())))?);
        let is_wrapped = raw.len() >= 8 && &raw[..8] == Self::MAGIC_WRAPPED;
        let is_legacy = raw.len() >= 8 && &raw[..8] == Self::MAGIC;
        if !is_wrapped && !is_legacy {
            // A crash while migrating a legacy file leaves it zeroed beside the complete new one.
            let tmp = path.with_extension("tmp");
            if allow_tmp && raw.iter().all(|&b| b == 0) && tmp.exists() {
                let mut a = Self::load_inner(&tmp, &key[..], false)?;
                fs::rename(&tmp, path).map_err(|e| AuthError::Io(format!("{}: {e}", path.display())))?;
                a.state_path = Some(path.to_path_buf());
                return Ok(a);
            }
            return Err(AuthError::BadKey(format!("{}: not an authentication state file (bad magic or truncated)", path.display())));
        }
        let bytes = if is_wrapped {
            if raw.len() < 8 + 12 + 16 {
                return Err(AuthError::BadKey(format!("{}: truncated state file", path.display())));
            }
            let cipher = Aes256Gcm::new_from_slice(&key[..]).map_err(|_| AuthError::BadKey("state key must be 32 bytes".into()))?;
            Zeroizing::new(
                cipher
                    .decrypt(Nonce::from_slice(&raw[8..20]), Payload { msg: &raw[20..], aad: Self::MAGIC_WRAPPED })
                    .map_err(|_| AuthError::BadKey(format!("{}: the state file fails authentication: wrong state key, or the file was altered or truncated", path.display())))?,
            )
        } else {
            raw.clone()
        };
        let mut a = Self::parse(&bytes, path)?;
        a.state_key = Some(key);
        if is_legacy {
            let n = a.next_send;
            a.write_state(n, true)?;
        }
        Ok(a)
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Self, AuthError> {
        let bad = |m: &str| AuthError::BadKey(format!("{}: {m}", path.display()));
        if bytes.len() < 104 || &bytes[..8] != Self::MAGIC {
            return Err(bad("not an authentication state file (bad magic or truncated)"));
        }
        let u = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let dir = bytes[8];
        if dir > 1 {
            return Err(bad("bad direction"));
        }
        let len = u(96) as usize;
        if bytes.len() != 104 + len {
            return Err(bad("length mismatch (truncated file)"));
        }
        let mut pool = KeyPool::new(&bytes[104..]);
        pool.base = u(32);
        let last = u(24);
        let next_send = u(16);
        Ok(Authenticator {
            hash_key: Zeroizing::new(u128::from_be_bytes(bytes[80..96].try_into().unwrap())),
            pool,
            my_dir: dir,
            next_send,
            send_reserved: next_send,
            last_recv: if last == u64::MAX { None } else { Some(last) },
            stats: AuthStats { signed: u(40), verified: u(48), rejected: u(56), used_bits: u(64), replenished_bits: u(72), ..Default::default() },
            backend: Backend::detect(),
            state_path: Some(path.to_path_buf()),
            state_key: None,
        })
    }
}

fn state_key_of(k: &[u8]) -> Result<Zeroizing<[u8; 32]>, AuthError> {
    if k.len() != 32 {
        return Err(AuthError::BadKey(format!("the state key must be 32 bytes (AES-256), got {}", k.len())));
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(k);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn psk(n: usize, seed: u64) -> Vec<u8> {
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.gen()).collect()
    }

    #[test]
    fn round_trip_and_rejections() {
        let k = psk(16 + 32 * 100, 1);
        let mut a = Authenticator::new(&k, 0).unwrap();
        let mut b = Authenticator::new(&k, 1).unwrap();
        for n in 0..10u64 {
            let t = a.sign(n, b"hdr", b"payload").unwrap();
            b.verify(n, b"hdr", b"payload", &t).unwrap();
            let t2 = b.sign(n, b"re", b"ply").unwrap();
            a.verify(n, b"re", b"ply", &t2).unwrap();
        }
        let t = a.sign(10, b"hdr", b"data").unwrap();
        assert_eq!(b.verify(10, b"hdr", b"datA", &t), Err(AuthError::TagMismatch));
        assert_eq!(b.verify(10, b"hdr", b"dat", &t), Err(AuthError::TagMismatch));
        assert_eq!(b.verify(10, b"hdx", b"data", &t), Err(AuthError::TagMismatch));
        assert_eq!(b.verify(11, b"hdr", b"data", &t), Err(AuthError::TagMismatch));
        b.verify(10, b"hdr", b"data", &t).unwrap();
        assert!(matches!(b.verify(10, b"hdr", b"data", &t), Err(AuthError::Replay { .. })));
        assert!(matches!(a.sign(5, b"", b""), Err(AuthError::SeqReuse { .. })));
        assert_eq!(b.stats().rejected, 5);
    }

    /// Answers checkable by hand (the full known-answer vectors from the independent Python
    /// implementation of docs/channel.md run in test/channel/mac.test.ts through the addon).
    #[test]
    fn hand_checkable_answers() {
        let k = 0x1u128; // H_1(A, D) = XOR of all blocks (k = 1): checkable by hand
        let h = gf128::poly_hash(k, b"a", b"", Backend::detect());
        let want = (0x61u128 << 120) ^ ((8u128) << 64);
        assert_eq!(h, want);
        // x * x^127 = x^128 = 0x87
        assert_eq!(gf128::mul(2, 1u128 << 127, Backend::detect()), 0x87);
    }

    #[test]
    fn exhaustion_and_replenish() {
        let k = psk(16 + 64, 2); // two slots per direction
        let mut a = Authenticator::new(&k, 0).unwrap();
        let mut b = Authenticator::new(&k, 1).unwrap();
        for n in 0..2 {
            let t = a.sign(n, b"", b"x").unwrap();
            b.verify(n, b"", b"x", &t).unwrap();
        }
        assert!(matches!(a.sign(2, b"", b"x"), Err(AuthError::KeyExhausted { .. })));
        let more = psk(320, 3);
        a.replenish(&more);
        b.replenish(&more);
        for n in 2..10 {
            let t = a.sign(n, b"", b"x").unwrap();
            b.verify(n, b"", b"x", &t).unwrap();
        }
        assert_eq!(a.stats().replenished_bits, 320 * 8);
    }

    #[test]
    fn persistence_never_reuses_a_pad() {
        let dir = std::env::temp_dir().join(format!("qkd-auth-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("alice.state");
        let k = psk(16 + 32 * 2000, 4);
        let mut a = Authenticator::new(&k, 0).unwrap();
        let mut b = Authenticator::new(&k, 1).unwrap();
        let sk = [7u8; 32];
        a.attach_state_file(&p, &sk).unwrap();
        for n in 0..3 {
            let t = a.sign(n, b"", b"m").unwrap();
            b.verify(n, b"", b"m", &t).unwrap();
        }
        // "crash": drop without save; reload resumes at the reservation, past 2.
        drop(a);
        let mut a2 = Authenticator::load(&p, &sk).unwrap();
        assert_eq!(a2.next_send_seq(), SEND_RESERVATION);
        let n = a2.next_send_seq();
        let t = a2.sign(n, b"", b"after").unwrap();
        b.verify(n, b"", b"after", &t).unwrap();
        a2.save().unwrap();
        let a3 = Authenticator::load(&p, &sk).unwrap();
        assert_eq!(a3.next_send_seq(), n + 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn state_file_is_wrapped_at_rest() {
        let dir = std::env::temp_dir().join(format!("qkd-auth-wrap-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("alice.state");
        let k = psk(16 + 32 * 100, 5);
        let mut a = Authenticator::new(&k, 0).unwrap();
        let sk = [9u8; 32];
        assert!(matches!(a.attach_state_file(&p, &[1u8; 16]), Err(AuthError::BadKey(_))), "a short state key is refused");
        a.attach_state_file(&p, &sk).unwrap();
        let on_disk = fs::read(&p).unwrap();
        assert_eq!(&on_disk[..8], b"QKDWCA02");
        assert!(!contains(&on_disk, &k[..16]), "hash key in the clear");
        assert!(!contains(&on_disk, &k[16 + 32 * 50..16 + 32 * 50 + 16]), "a pad in the clear");
        assert!(matches!(Authenticator::load(&p, &[8u8; 32]), Err(AuthError::BadKey(_))), "wrong state key refused");
        let mut altered = on_disk.clone();
        altered[40] ^= 1;
        fs::write(&p, &altered).unwrap();
        assert!(matches!(Authenticator::load(&p, &sk), Err(AuthError::BadKey(_))), "altered file refused");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn legacy_clear_state_is_migrated_and_scrubbed() {
        let dir = std::env::temp_dir().join(format!("qkd-auth-legacy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bob.state");
        let k = psk(16 + 32 * 100, 6);
        let mut b = Authenticator::new(&k, 1).unwrap();
        b.state_path = Some(p.clone());
        let legacy = b.record(3);
        fs::write(&p, &legacy[..]).unwrap();
        let sk = [3u8; 32];
        let b2 = Authenticator::load(&p, &sk).unwrap();
        assert_eq!(b2.next_send_seq(), 3);
        let on_disk = fs::read(&p).unwrap();
        assert_eq!(&on_disk[..8], b"QKDWCA02", "rewritten wrapped at once");
        assert!(!contains(&on_disk, &k[..16]));
        // A crash between scrubbing the legacy file and the rename: zeroed file + complete tmp.
        fs::write(p.with_extension("tmp"), &on_disk).unwrap();
        fs::write(&p, vec![0u8; legacy.len()]).unwrap();
        let b3 = Authenticator::load(&p, &sk).unwrap();
        assert_eq!(b3.next_send_seq(), 3);
        assert_eq!(&fs::read(&p).unwrap()[..8], b"QKDWCA02");
        // Both zeroed (or empty): refused, without looping over `<path>.tmp`.
        fs::write(&p, vec![0u8; 64]).unwrap();
        fs::write(p.with_extension("tmp"), vec![0u8; 64]).unwrap();
        assert!(matches!(Authenticator::load(&p, &sk), Err(AuthError::BadKey(_))));
        fs::write(p.with_extension("tmp"), b"").unwrap();
        fs::write(&p, b"").unwrap();
        assert!(matches!(Authenticator::load(&p, &sk), Err(AuthError::BadKey(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
