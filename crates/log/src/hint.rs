//! Cache prefetch hints. A request that appends to hundreds of logs touches each one's state
//! and pending tail once, cold: asking for the next logs' lines while working on this one
//! overlaps those misses instead of taking them one after another.

/// Bytes in a cache line.
const LINE: usize = 64;

/// Asks for the `bytes` from `at` to be brought into the cache, to be written. A hint only: it
/// never faults, whatever the address, and does nothing on other architectures.
///
/// Where the CPU has the write-prefetch instruction (`PREFETCHW`, detected at run time: the
/// build targets the x86_64 baseline, which lacks it), a line comes in owned, ready to be
/// written. A plain prefetch brings it in shared: the first store then still asks the other
/// core for it, and the next locked instruction (a lock, a count) waits for that answer. Over
/// 512 shards most lines a request writes were last written by the other core.
#[inline(always)]
pub fn prefetch_write<T>(at: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = at as usize & !(LINE - 1);
        let end = at as usize + bytes.max(1);
        if has_prefetchw() {
            prefetch_lines_owned(start, end);
        } else {
            prefetch_read(at, bytes);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, bytes);
}

/// Asks for the `bytes` from `at` to be brought into the cache, to be read only (shared: the
/// other core keeps its copy). A hint only, like [`prefetch_write`].
#[inline(always)]
pub fn prefetch_read<T>(at: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = at as usize + bytes.max(1);
        let mut line = at as usize & !(LINE - 1);
        while line < end {
            // SAFETY: a prefetch never faults and reads nothing the program can observe; SSE
            // is part of the x86_64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line as *const i8,
                );
            }
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, bytes);
}

/// Whether the CPU has `PREFETCHW` (CPUID leaf 0x8000_0001, ECX bit 8: `PRFCHW`, which
/// `is_x86_feature_detected!` does not know on stable Rust), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        let extended_max = __cpuid(0x8000_0000).eax;
        extended_max >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    })
}

/// `PREFETCHW` of every line from `start` (line-aligned) up to `end`; only where
/// [`has_prefetchw`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_lines_owned(start: usize, end: usize) {
    let mut line = start;
    while line < end {
        // SAFETY: called only where the CPU has the instruction; a prefetch never faults,
        // whatever the address, and changes nothing the program can observe.
        unsafe {
            std::arch::asm!(
                "prefetchw byte ptr [{line}]",
                line = in(reg) line,
                options(nostack, preserves_flags, readonly)
            );
        }
        line += LINE;
    }
}
