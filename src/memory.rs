//! Handing memory back to the system after large bodies.
//!
//! glibc's malloc raises its mmap threshold to the size of each large block freed (up to
//! 32 MiB), so after the first large body every later one is carved from the heap arenas,
//! one per thread of the blocking pool, and stays there when freed: 8 concurrent 30 MB
//! bodies left hundreds of MB resident. A fixed threshold keeps large blocks mapped on
//! their own, so that freeing them returns them at once.

/// Blocks from this size on get their own mapping (and go back to the system when freed).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// Sets the allocator up; call once at startup, before other threads exist.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before other threads run.
    unsafe {
        // Setting the threshold also turns off its dynamic adjustment.
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
