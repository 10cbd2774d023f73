//! The rotation and retention schedule of prekeys.

/// The rotation and retention schedule. The defaults follow Signal's clients: a new signed
/// prekey (and last-resort KEM key) every 2 days, a retired one kept 30 days for messages
/// still in flight and then deleted.
#[derive(Clone, Copy, Debug)]
pub struct PrekeyPolicy {
    /// How long a signed prekey or last-resort KEM key is the current one.
    pub rotation_period_secs: u64,
    /// How long a retired key is kept before its private half is deleted.
    pub retired_grace_secs: u64,
    /// How many one-time keys of each kind the server should hold after a refill.
    pub one_time_target: u32,
    /// Refill when the server reports fewer than this many.
    pub one_time_low_water: u32,
}

impl Default for PrekeyPolicy {
    fn default() -> Self {
        Self {
            rotation_period_secs: 2 * 86_400,
            retired_grace_secs: 30 * 86_400,
            one_time_target: 100,
            one_time_low_water: 20,
        }
    }
}
