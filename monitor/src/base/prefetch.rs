//! Hints to the CPU to bring bytes into its caches before they are read.

/// Asks the CPU to fetch the two cache lines at `buf[at..]` (a capture record's header and the
/// frame headers after it). Never faults and reads nothing architecturally, whatever `at` is: an
/// offset past the end is a wasted hint, not an error.
#[inline(always)]
pub fn prefetch(buf: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = buf.as_ptr().wrapping_add(at).cast::<i8>();
        // SAFETY: SSE is part of x86_64; a prefetch never faults and reads nothing
        // architecturally, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, at);
}

/// Asks the CPU to fetch the cache line at `buf[at..]` into its outer caches (not the first
/// level): for bytes wanted soon but not next. Never faults, whatever `at` is.
#[inline(always)]
pub fn prefetch_far(buf: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T2, _mm_prefetch};
        let p = buf.as_ptr().wrapping_add(at).cast::<i8>();
        // SAFETY: as in `prefetch`.
        unsafe { _mm_prefetch::<_MM_HINT_T2>(p) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, at);
}
