//! A bound on the request-body bytes the sidecar holds at once.
//!
//! A large body is held several times over while it is handled (the gRPC frame, the
//! decoded message, the parsed and the translated body) and stays in the request state
//! until the answer ends, for retries. Without a bound, a few concurrent large bodies took
//! the sidecar to gigabytes. Bodies under [`LARGE_BODY_BYTES`] are not counted: they cost
//! little, and the hot path takes no lock for them.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::ApiError;

/// Bodies from this size on take a share of the budget.
pub const LARGE_BODY_BYTES: u64 = 1 << 20;

/// The default budget: two bodies of the default 32 MiB limit at once. A body translated
/// for another provider is held about four times over at its peak (measured: 8 concurrent
/// 30 MB bodies peaked at 1.2 GB without a budget).
pub const DEFAULT_BODY_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// Permits are KiB, so that a budget of terabytes still fits the semaphore's count.
const UNIT: u64 = 1024;

#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
    total_bytes: u64,
}

/// A share of the budget, given back when dropped (when the request's stream ends).
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl BodyBudget {
    pub fn new(total_bytes: u64) -> Self {
        let total_units = u32::try_from(total_bytes.div_ceil(UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        BodyBudget {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            total_bytes,
        }
    }

    /// Reserves `bytes` of a large body, or refuses it when the budget is spent. None for
    /// a small body. A body larger than the whole budget takes all of it, so that it can
    /// still be served alone.
    pub fn reserve(&self, bytes: u64) -> Result<Option<Reservation>, ApiError> {
        if bytes < LARGE_BODY_BYTES {
            return Ok(None);
        }
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.total_units);
        match self.permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(Some(Reservation { _permit: permit })),
            Err(_) => Err(ApiError::BodiesInFlight {
                limit: self.total_bytes,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_share_the_budget_and_give_it_back() {
        let budget = BodyBudget::new(10 << 20);
        assert!(budget.reserve(1000).unwrap().is_none());
        let a = budget.reserve(6 << 20).unwrap();
        assert!(a.is_some());
        let refused = budget.reserve(6 << 20).unwrap_err();
        assert_eq!(refused.status(), 503);
        assert!(refused.retry_after().is_some());
        let b = budget.reserve(4 << 20).unwrap();
        drop(a);
        // Larger than the whole budget: served alone once the rest is back.
        assert!(budget.reserve(64 << 20).is_err());
        drop(b);
        assert!(budget.reserve(64 << 20).unwrap().is_some());
    }
}
