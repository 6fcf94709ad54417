//! Mutexes whose data stays consistent even if a holder panicked: every critical
//! section in the store leaves its data whole at each step, so a poisoned lock is
//! taken as it is rather than failing every later caller.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
