//! The time type of the prekey schedule.

/// Seconds since the Unix epoch, supplied by the caller (the core reads no clock).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// `self` plus `secs` seconds, saturating.
    pub(crate) fn plus(self, secs: u64) -> Self {
        Self(self.0.saturating_add(secs))
    }
}
