//! The time every decision of the server is made at.
//!
//! Handlers, the billing service and its background passes ask the
//! [`Clock`] in the app state for `now` and pass it down (`core` and the
//! store never read the clock themselves). The server runs on the
//! [`SystemClock`]; tests run on a [`ManualClock`] and move time forward
//! themselves, so no test waits for a sandbox period, a retry backoff or a
//! lease to run out.
//!
//! The token verifier's rate limits go by it too: when a JWKS may be
//! fetched again, when an issuer's keys are old, when a WorkOS user's
//! e-mail is read again.
//!
//! What the clock does not govern: how often background passes wake up
//! (tokio timers), cache lifetimes, the security windows checked against
//! other systems' clocks (token expiry, a webhook signature's timestamp),
//! and the time inside new ids (a UUIDv7 carries creation time only for
//! sort order; no rule reads it).

use std::fmt;
use std::sync::Mutex;

use orgplane_core::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The machine's clock (UTC).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }
}

/// A clock that tests move by hand: either standing still at a set time,
/// or running with the machine's clock shifted by an offset. Either way,
/// [`ManualClock::advance`] jumps it forward at once.
#[derive(Debug)]
pub struct ManualClock(Mutex<Manual>);

#[derive(Debug, Clone, Copy)]
enum Manual {
    Frozen(Timestamp),
    Shifted(time::Duration),
}

impl ManualClock {
    /// A clock standing still at `at`.
    pub fn at(at: Timestamp) -> ManualClock {
        ManualClock(Mutex::new(Manual::Frozen(at)))
    }

    /// A clock running with the machine's, until advanced.
    pub fn running() -> ManualClock {
        ManualClock(Mutex::new(Manual::Shifted(time::Duration::ZERO)))
    }

    /// Moves the clock forward by `by` (a negative duration moves it back).
    pub fn advance(&self, by: time::Duration) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *state = match *state {
            Manual::Frozen(at) => Manual::Frozen(at + by),
            Manual::Shifted(offset) => Manual::Shifted(offset + by),
        };
    }

    /// Stops the clock at `at`.
    pub fn set(&self, at: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Manual::Frozen(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        match *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Manual::Frozen(at) => at,
            Manual::Shifted(offset) => Timestamp::now_utc() + offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_advanced() {
        let start = time::macros::datetime!(2026-11-29 08:00 UTC);
        let clock = ManualClock::at(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.now(), start);
        clock.advance(time::Duration::minutes(90));
        assert_eq!(clock.now(), time::macros::datetime!(2026-11-29 09:30 UTC));
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn a_running_manual_clock_jumps_forward_when_advanced() {
        let clock = ManualClock::running();
        let before = Timestamp::now_utc();
        clock.advance(time::Duration::days(40));
        let now = clock.now();
        assert!(now >= before + time::Duration::days(40), "{now} is at least 40 days after {before}");
        assert!(now < Timestamp::now_utc() + time::Duration::days(41), "{now} runs with the machine's clock");
    }
}
