//! Link slots (issue 9, provisioning): a new device publishes its offer under a slot id
//! derived from its link secret (the server never sees the secret; the offer is MACed and
//! the answer sealed under keys from it, so the server can neither read nor substitute
//! them); an approving device of any account answers once; the new device waits for the
//! answer (long poll) and deletes the slot. A slot lives [`LINK_TTL_SECS`] after its offer.

use std::time::Duration;

use tacit_api::limits::{LINK_TTL_SECS, MAX_LINK_MESSAGE_BYTES, MAX_LINK_WAIT_SECS};
use tacit_api::{LinkAnswerRequest, LinkAnswerResponse, LinkOfferRequest, LinkOfferResponse};

use crate::error::Failure;
use crate::state::{AppState, now_ms};
use crate::store::{Authed, StoreError};

/// How often a waiting `GET` answer looks at the store.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A slot id from its path form: exactly 32 lowercase hex characters, else not found.
pub fn parse_slot(hex: &str) -> Result<[u8; 16], Failure> {
    let b = hex.as_bytes();
    if b.len() != 32 {
        return Err(Failure::NotFound);
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else { return Err(Failure::NotFound) };
        *o = (digit(hi).ok_or(Failure::NotFound)? << 4) | digit(lo).ok_or(Failure::NotFound)?;
    }
    Ok(out)
}

fn remaining_secs(expires_ms: u64, now: u64) -> u64 {
    expires_ms.saturating_sub(now).div_ceil(1000)
}

/// `POST /v1/link` (no auth; limited per address twice: its request budget and
/// [`tacit_api::limits::LINK_OFFERS_PER_MINUTE`]).
pub async fn offer(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    req: LinkOfferRequest,
) -> Result<LinkOfferResponse, Failure> {
    state.limit_address(peer)?;
    if let Some(ip) = peer {
        state.limit(crate::limiter::LimitKey::LinkOffers(crate::limiter::client_of(ip)))?;
    }
    let slot: [u8; 16] =
        req.slot.as_slice().try_into().map_err(|_| Failure::BadRequest("slot is 16 bytes"))?;
    let len = req.offer.as_slice().len();
    if len > MAX_LINK_MESSAGE_BYTES {
        return Err(Failure::TooLarge("link offer too large"));
    }
    if len == 0 {
        return Err(Failure::BadRequest("empty link offer"));
    }
    let now = now_ms();
    let expires = now.saturating_add(LINK_TTL_SECS * 1000);
    state.store().put_link_offer(slot, req.offer.0.clone(), now, expires).await.map_err(|e| match e {
        StoreError::Conflict => Failure::AlreadyUsed("this link slot is taken".into()),
        other => other.into(),
    })?;
    Ok(LinkOfferResponse { offer: req.offer, expires_in_secs: LINK_TTL_SECS })
}

/// `GET /v1/link/{slot}` (no auth): the offer, until the slot is answered.
pub async fn get_offer(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    slot: &str,
) -> Result<LinkOfferResponse, Failure> {
    state.limit_address(peer)?;
    let slot = parse_slot(slot)?;
    let now = now_ms();
    let s = state.store().link_slot(slot, now).await?.ok_or(Failure::NotFound)?;
    if s.answer.is_some() {
        return Err(Failure::AlreadyUsed("this link code was used already".into()));
    }
    Ok(LinkOfferResponse { offer: s.offer.into(), expires_in_secs: remaining_secs(s.expires_ms, now) })
}

/// `PUT /v1/link/{slot}/answer` (auth): the sealed answer, once.
pub async fn answer(
    state: &AppState,
    _caller: &Authed,
    slot: &str,
    req: LinkAnswerRequest,
) -> Result<(), Failure> {
    let slot = parse_slot(slot)?;
    let len = req.answer.as_slice().len();
    if len > MAX_LINK_MESSAGE_BYTES {
        return Err(Failure::TooLarge("link answer too large"));
    }
    if len == 0 {
        return Err(Failure::BadRequest("empty link answer"));
    }
    state.store().put_link_answer(slot, req.answer.0, now_ms()).await.map_err(|e| match e {
        StoreError::Conflict => Failure::AlreadyUsed("this link code was answered already".into()),
        other => other.into(),
    })
}

/// `GET /v1/link/{slot}/answer?wait_secs=N` (no auth): the answer, waiting up to
/// [`MAX_LINK_WAIT_SECS`] for it (`None`: not within the wait; the route answers `204`).
/// A shutdown ends the wait at once.
pub async fn wait_answer(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    slot: &str,
    wait_secs: u64,
) -> Result<Option<LinkAnswerResponse>, Failure> {
    state.limit_address(peer)?;
    let slot = parse_slot(slot)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_secs.min(MAX_LINK_WAIT_SECS));
    let shutdown = state.inner().shutdown.clone();
    loop {
        let s = state.store().link_slot(slot, now_ms()).await?.ok_or(Failure::NotFound)?;
        if let Some(answer) = s.answer {
            return Ok(Some(LinkAnswerResponse { answer: answer.into() }));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY.min(deadline - now)) => {}
            () = shutdown.cancelled() => return Err(Failure::Unavailable),
        }
    }
}

/// `DELETE /v1/link/{slot}` (no auth: whoever knows the slot id may end it).
pub async fn delete(state: &AppState, peer: Option<std::net::IpAddr>, slot: &str) -> Result<(), Failure> {
    state.limit_address(peer)?;
    let slot = parse_slot(slot)?;
    if state.store().delete_link_slot(slot).await? { Ok(()) } else { Err(Failure::NotFound) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_are_32_lowercase_hex_characters() {
        assert_eq!(
            parse_slot("000102030405060708090a0b0c0d0eff").ok(),
            Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255])
        );
        for bad in [
            "",
            "00",
            "000102030405060708090A0B0C0D0EFF",
            "000102030405060708090a0b0c0d0eff00",
            "g00102030405060708090a0b0c0d0eff",
            "éééééééééééééééé",
        ] {
            assert!(matches!(parse_slot(bad), Err(Failure::NotFound)), "{bad}");
        }
    }
}
