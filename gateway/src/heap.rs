//! How the C allocator keeps the memory of large letters.
//!
//! glibc maps a fresh region for an allocation above its threshold (128 KiB at the
//! start, raised by frees up to 32 MiB) and gives the top of an arena back to the
//! kernel once more than twice that threshold is free. A 2 MiB letter passes through
//! buffers of megabytes on the pipeline's threads, so every letter had its buffers'
//! pages faulted in and zeroed by the kernel again. Fixed thresholds let those buffers
//! be reused from the arenas instead. Measured on the server for 800 letters of 2 MiB
//! at 32 and 128 sessions: 630 thousand minor page faults against 96–99 thousand, and
//! about 1 ms less system time a letter (of 24–26 ms of CPU); peak RSS 351 MB against
//! 398–408 MB. With the top trimmed past 16 MiB instead of 64, 141 thousand faults;
//! past 8 MiB, 539 thousand.

/// Sets the allocator's thresholds for a serving process. Call it before any thread
/// is started. Where the C library is not glibc, or the operator tunes its allocator
/// with `GLIBC_TUNABLES`, it does nothing.
pub fn keep_letter_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::set_thresholds();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Allocations up to this size come from the arenas, never from their own mapping
    /// (glibc's largest mapping threshold on 64-bit targets).
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;

    /// An arena keeps this much free memory at its top before it gives any back.
    const TRIM_THRESHOLD: libc::c_int = 64 << 20;

    /// Sets both thresholds, unless `GLIBC_TUNABLES` sets the allocator's.
    pub(super) fn set_thresholds() {
        if std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|tunables| tunables.to_string_lossy().contains("glibc.malloc."))
        {
            tracing::info!("GLIBC_TUNABLES tunes the allocator: kvgate's thresholds are not set");
            return;
        }
        for (parameter, value, name) in [
            (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD, "M_MMAP_THRESHOLD"),
            (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD, "M_TRIM_THRESHOLD"),
        ] {
            // SAFETY: mallopt only changes glibc's allocator parameters, under its own
            // lock; it touches no memory of ours.
            let set = unsafe { libc::mallopt(parameter, value) };
            if set != 1 {
                tracing::warn!(
                    parameter = name,
                    value,
                    "the C library refused an allocator setting"
                );
            }
        }
    }
}
