//! How the C allocator keeps the memory of large letters.
//!
//! glibc maps a fresh region for an allocation above its threshold (128 KiB at the
//! start, raised by frees up to 32 MiB) and gives the top of an arena back to the
//! kernel once more than twice that threshold is free. A 2 MiB letter passes through
//! buffers of megabytes on the pipeline's threads, so every letter had its buffers'
//! pages faulted in and zeroed by the kernel again: 600 to 800 page faults a letter
//! (240 with the thresholds below), and about 2 ms of system time of the 26 ms a
//! letter took. Fixed thresholds let those buffers be reused from the arenas instead.
//! Peak RSS stays what the letters need at once (the memory benchmark's batch of 50:
//! 84 MiB before, 89 MiB after; its 200 MiB letter: 364 MiB both).

/// Allocations up to this size come from the arenas, never from their own mapping
/// (glibc's largest mapping threshold on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// An arena keeps this much free memory at its top before it gives any back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Sets the allocator's thresholds for a serving process. Call it before any thread
/// is started; where the C library is not glibc, it does nothing.
pub fn keep_letter_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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
