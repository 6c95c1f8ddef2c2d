//! Protected memory for key bytes (issue 14, "Protected memory").
//!
//! A [`SecretBuf`] owns its bytes in a private anonymous mapping of its own:
//!
//! ```text
//!  ┌────────────┬──────────────────────────────┬────────────┐
//!  │ guard page │ data pages (mlock'd,          │ guard page │
//!  │ PROT_NONE  │ MADV_DONTDUMP, read/write)    │ PROT_NONE  │
//!  └────────────┴──────────────────────────────┴────────────┘
//!                ^ bytes start here (len <= data pages)
//! ```
//!
//! - `mlock`: the pages are never written to swap (Linux mlock(2)).
//! - `MADV_DONTDUMP`: the pages are left out of core dumps (madvise(2), Linux >= 3.4).
//! - guard pages: a linear overrun or underrun from a neighbouring allocation faults instead of
//!   reading or writing key bytes (and vice versa), the design of libsodium's `sodium_malloc`.
//! - drop: the bytes are zeroised (`zeroize`, volatile writes the compiler keeps), then the pages
//!   are unlocked and unmapped.
//!
//! If `mlock` is refused (RLIMIT_MEMLOCK reached by a non-root KMS), the buffer still works, its
//! pages are still excluded from core dumps and zeroised; [`SecretBuf::is_locked`] says so and
//! [`lock_failures`] counts it so the KMS can raise an alarm instead of failing every request.
//! One mapping per key costs a few syscalls (≈ 10 µs): keys are handed out one request at a time,
//! not on a hot path. Not Linux: a plain zeroised heap buffer (no lock, no guard pages).
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroize;

static LOCK_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many `SecretBuf`s could not be mlock'd since the process started.
pub fn lock_failures() -> u64 {
    LOCK_FAILURES.load(Ordering::Relaxed)
}

/// Key bytes in locked, guarded, non-dumpable pages; zeroised on drop.
pub struct SecretBuf {
    #[cfg(target_os = "linux")]
    map: *mut u8,
    #[cfg(target_os = "linux")]
    map_len: usize,
    #[cfg(target_os = "linux")]
    data: *mut u8,
    #[cfg(not(target_os = "linux"))]
    heap: Vec<u8>,
    len: usize,
    locked: bool,
}

// SAFETY: the mapping is owned exclusively by this value (no aliasing pointers are handed out
// beyond borrows tied to &self / &mut self), so moving it to another thread is sound.
unsafe impl Send for SecretBuf {}
// SAFETY: shared access only reads through &[u8].
unsafe impl Sync for SecretBuf {}

#[cfg(target_os = "linux")]
fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

impl SecretBuf {
    /// `len` zero bytes in protected memory. Panics only if the OS refuses the mapping itself
    /// (out of address space), as an allocation failure would.
    #[cfg(target_os = "linux")]
    pub fn zeroed(len: usize) -> SecretBuf {
        let pg = page();
        let data_len = len.div_ceil(pg).max(1) * pg;
        let map_len = data_len + 2 * pg;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let map = unsafe {
            libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(map != libc::MAP_FAILED, "mmap of {map_len} bytes for key material failed");
        let map = map as *mut u8;
        // SAFETY: [pg, pg + data_len) lies inside the mapping made above.
        let data = unsafe { map.add(pg) };
        // SAFETY: the range is inside our mapping; PROT_NONE stays on the two guard pages.
        let rc = unsafe { libc::mprotect(data as *mut libc::c_void, data_len, libc::PROT_READ | libc::PROT_WRITE) };
        assert!(rc == 0, "mprotect of key pages failed");
        // SAFETY: advice and locking on our own data pages; failures are reported, not UB.
        let locked = unsafe {
            libc::madvise(data as *mut libc::c_void, data_len, libc::MADV_DONTDUMP);
            libc::mlock(data as *const libc::c_void, data_len) == 0
        };
        if !locked {
            LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        SecretBuf { map, map_len, data, len, locked }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn zeroed(len: usize) -> SecretBuf {
        LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
        SecretBuf { heap: vec![0; len], len, locked: false }
    }

    /// A protected copy of `bytes` (the caller wipes its own copy).
    pub fn from_slice(bytes: &[u8]) -> SecretBuf {
        let mut s = SecretBuf::zeroed(bytes.len());
        s.copy_from_slice(bytes);
        s
    }

    /// Are the pages locked in RAM (mlock succeeded)?
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Address of the first byte (tests: check the page's lock and contents after drop).
    pub fn as_ptr_for_tests(&self) -> *const u8 {
        self.as_ref().as_ptr()
    }

    /// Keeps the first `len` bytes (after an in-place decryption that removed a tag).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self[len..].zeroize();
            self.len = len;
        }
    }
}

impl std::ops::Deref for SecretBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        #[cfg(target_os = "linux")]
        // SAFETY: `data` points to at least `len` readable bytes owned by self.
        return unsafe { std::slice::from_raw_parts(self.data, self.len) };
        #[cfg(not(target_os = "linux"))]
        return &self.heap;
    }
}

impl std::ops::DerefMut for SecretBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        #[cfg(target_os = "linux")]
        // SAFETY: `data` points to at least `len` writable bytes owned exclusively by self.
        return unsafe { std::slice::from_raw_parts_mut(self.data, self.len) };
        #[cfg(not(target_os = "linux"))]
        return &mut self.heap;
    }
}

impl AsRef<[u8]> for SecretBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl SecretBuf {
    /// Zeroises the whole data area (volatile writes the compiler keeps); drop's first step.
    pub fn wipe(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let data_len = self.map_len - 2 * page();
            // SAFETY: the whole data area is ours and writable.
            unsafe { std::slice::from_raw_parts_mut(self.data, data_len) }.zeroize();
        }
        #[cfg(not(target_os = "linux"))]
        self.heap.zeroize();
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.wipe();
        #[cfg(target_os = "linux")]
        {
            let data_len = self.map_len - 2 * page();
            // SAFETY: unlock and unmap exactly what zeroed() mapped; nothing refers to it after.
            unsafe {
                if self.locked {
                    libc::munlock(self.data as *const libc::c_void, data_len);
                }
                libc::munmap(self.map as *mut libc::c_void, self.map_len);
            }
        }
    }
}

impl std::fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes.
        write!(f, "SecretBuf({} bytes, locked: {})", self.len, self.locked)
    }
}

/// One key of a batch whose keys share a single [`SecretBuf`]: a group commit of n pushed keys
/// costs one protected mapping (mmap, mprotect, madvise, mlock, and munlock/munmap on drop)
/// instead of n — per key those syscalls cost ≈ 30 µs on the KMS's JS thread, more than the key's
/// share of the commit. The bytes stay in locked, guarded pages, zeroised when the last slice of
/// the batch is dropped.
#[derive(Clone)]
pub struct SecretSlice {
    buf: std::sync::Arc<SecretBuf>,
    start: usize,
    len: usize,
}

impl SecretSlice {
    /// Cuts `buf` into consecutive slices of `sizes` bytes; None unless the sizes add up to its length.
    pub fn split(buf: SecretBuf, sizes: &[usize]) -> Option<Vec<SecretSlice>> {
        if sizes.iter().sum::<usize>() != buf.len() {
            return None;
        }
        let buf = std::sync::Arc::new(buf);
        let mut start = 0;
        Some(sizes.iter().map(|&len| {
            let s = SecretSlice { buf: buf.clone(), start, len };
            start += len;
            s
        }).collect())
    }
}

impl std::ops::Deref for SecretSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for SecretSlice {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for SecretSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes.
        write!(f, "SecretSlice({} bytes at {})", self.len, self.start)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The mapping holding `p` in /proc/self/smaps: its address range and its "Locked:" kB.
    /// Per mapping, not the process's VmLck: cargo runs the tests on parallel threads, and the
    /// other tests lock and unlock pages of their own meanwhile.
    fn mapping_of(p: *const u8) -> Option<(usize, usize, u64)> {
        let s = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let a = p as usize;
        let mut range: Option<(usize, usize)> = None;
        for l in s.lines() {
            if let Some((r, _)) = l.split_once(' ') {
                if let Some((lo, hi)) = r.split_once('-') {
                    if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                        range = (lo <= a && a < hi).then_some((lo, hi));
                        continue;
                    }
                }
            }
            if let (Some((lo, hi)), Some(kb)) = (range, l.strip_prefix("Locked:")) {
                return Some((lo, hi, kb.trim().trim_end_matches("kB").trim().parse().unwrap()));
            }
        }
        None
    }

    /// Is the page holding `p` resident (mincore)? A locked page must be.
    fn resident(p: *const u8) -> bool {
        let pg = page();
        let base = (p as usize) & !(pg - 1);
        let mut v = 0u8;
        // SAFETY: asks about one page of a live mapping; writes one byte into v.
        let rc = unsafe { libc::mincore(base as *mut libc::c_void, pg, &mut v) };
        rc == 0 && v & 1 == 1
    }

    /// The flags of the mapping holding `p` in /proc/self/smaps ("VmFlags: rd wr ... lo dd").
    fn vm_flags(p: *const u8) -> String {
        let s = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let a = p as usize;
        let mut inside = false;
        for l in s.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                        inside = lo <= a && a < hi;
                        continue;
                    }
                }
            }
            if inside && l.starts_with("VmFlags:") {
                return l.to_string();
            }
        }
        panic!("no mapping holds {a:#x}");
    }

    #[test]
    fn pages_are_locked_guarded_and_not_dumped() {
        let s = SecretBuf::from_slice(&[0xA5; 32]);
        assert!(s.is_locked(), "mlock refused (RLIMIT_MEMLOCK?): run as root or raise the limit");
        assert_eq!(&s[..], &[0xA5; 32]);
        let (lo, hi, locked_kb) = mapping_of(s.as_ptr_for_tests()).unwrap();
        assert_eq!(locked_kb, ((hi - lo) / 1024) as u64, "every page of the key's mapping is locked");
        assert!(resident(s.as_ptr_for_tests()));
        let f = vm_flags(s.as_ptr_for_tests());
        // smaps VmFlags: lo = locked, dd = do not include in core dump.
        assert!(f.contains(" lo") && f.contains(" dd"), "{f}");
        // The page before the data is a guard: PROT_NONE (no rd/wr flags).
        let g = vm_flags(s.as_ptr_for_tests().wrapping_sub(1));
        assert!(!g.contains(" rd") && !g.contains(" wr"), "guard page is accessible: {g}");
        let p = s.as_ptr_for_tests();
        drop(s);
        // Unmapped (a mapping that is gone holds no lock); another test's mapping may reuse the
        // address later, but not between these two lines on this thread's own range.
        assert!(mapping_of(p).map_or(true, |(l, h, _)| (l, h) != (lo, hi)), "the key's mapping outlived the drop");
    }

    #[test]
    fn bytes_are_zero_after_wipe_and_gone_after_drop() {
        let mut s = SecretBuf::from_slice(&[0x5A; 100]);
        let p = s.as_ptr_for_tests();
        // SAFETY: p..p+100 is s's live data area.
        assert!((0..100).all(|i| unsafe { std::ptr::read_volatile(p.add(i)) } == 0x5A), "the bytes are there first");
        s.truncate(10);
        // SAFETY: still mapped while s lives.
        assert!((10..100).all(|i| unsafe { std::ptr::read_volatile(p.add(i)) } == 0), "truncate zeroises the cut tail");
        // drop = wipe (checked here on the live mapping, every byte of the data pages) + unmap.
        s.wipe();
        let data_len = s.map_len - 2 * page();
        // SAFETY: still mapped while s lives.
        assert!((0..data_len).all(|i| unsafe { std::ptr::read_volatile(p.add(i)) } == 0), "wipe leaves non-zero bytes");
        drop(s);
        // After drop the pages are gone (mincore: ENOMEM), so no copy stays at that address.
        let mut v = 0u8;
        // SAFETY: mincore on an unmapped range only reports an error.
        let rc = unsafe { libc::mincore(((p as usize) & !(page() - 1)) as *mut libc::c_void, page(), &mut v) };
        assert_eq!(rc, -1, "the key page is still mapped after drop");
    }

    #[test]
    fn slices_of_a_batch_share_one_locked_mapping_released_with_the_last() {
        let bytes: Vec<u8> = (0..96u8).collect();
        assert!(SecretSlice::split(SecretBuf::from_slice(&bytes), &[32, 32]).is_none(), "sizes must add up");
        let mut v = SecretSlice::split(SecretBuf::from_slice(&bytes), &[32, 16, 48]).unwrap();
        assert_eq!((&v[0][..], &v[1][..], &v[2][..]), (&bytes[..32], &bytes[32..48], &bytes[48..]));
        let p = v[1].as_ptr();
        assert!(vm_flags(p).contains(" lo"), "the batch's keys are in locked pages");
        // One mapping per key would put each slice in its own range between guard pages.
        let (first, last) = (mapping_of(v[0].as_ptr()).unwrap(), mapping_of(v[2].as_ptr()).unwrap());
        assert_eq!((first.0, first.1), (last.0, last.1), "one mapping for the batch, not one per key");
        assert_eq!(first.1 - first.0, page(), "96 bytes take one locked page");
        v.truncate(1);
        // SAFETY: v[0] keeps the shared mapping alive.
        assert_eq!(unsafe { std::ptr::read_volatile(p) }, 32, "a live slice keeps the others' bytes mapped");
        drop(v);
        let mut r = 0u8;
        // SAFETY: mincore on an unmapped range only reports an error.
        let rc = unsafe { libc::mincore(((p as usize) & !(page() - 1)) as *mut libc::c_void, page(), &mut r) };
        assert_eq!(rc, -1, "the batch's pages are still mapped after the last slice was dropped");
    }
}
