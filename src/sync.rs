//! One rule for poisoned locks, everywhere: a panic while a lock was held cannot leave
//! what it guards half-written (every critical section here is a plain read, insert or
//! replace), so the value is used as it is, never dropped or replaced by an error.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
