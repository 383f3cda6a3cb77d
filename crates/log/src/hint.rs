//! Cache prefetch hints. A request that appends to hundreds of logs touches each one's state
//! and pending tail once, cold: asking for the next logs' lines while working on this one
//! overlaps those misses instead of taking them one after another.

/// Bytes in a cache line.
const LINE: usize = 64;

/// Asks for the `bytes` from `at` to be brought into the cache, to be written (a plain prefetch
/// where the build does not target the write-prefetch instruction). A hint only: it never
/// faults, whatever the address, and does nothing on other architectures.
#[inline(always)]
pub fn prefetch_write<T>(at: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = at as usize & !(LINE - 1);
        let end = at as usize + bytes.max(1);
        let mut line = start;
        while line < end {
            // SAFETY: a prefetch never faults and reads nothing the program can observe; SSE
            // is part of the x86_64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                    line as *const i8,
                );
            }
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, bytes);
}
