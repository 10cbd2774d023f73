//! The properties the `wire_frames` fuzz target checks, shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`): any bytes given to the JSON decoders of the wire contract (what a
//! server reads from clients and a client reads from a server) either fail to decode or
//! decode to a value that re-encodes and decodes to itself. A panic is a bug.

use tacit_api as api;

/// Decodes `data` as `T`; a decoded value must survive an encode-decode round trip.
fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(data) else { return };
    let text = serde_json::to_string(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_str(&text).expect("an encoded value decodes");
    assert_eq!(again, value, "round trip changed the value");
}

/// Every decoder of peer input in `tacit-api`.
pub fn check_wire_frames(data: &[u8]) {
    round_trip::<api::ClientFrame>(data);
    round_trip::<api::ServerFrame>(data);
    round_trip::<api::SendRequest>(data);
    round_trip::<api::AckRequest>(data);
    round_trip::<api::CreateAccountRequest>(data);
    round_trip::<api::ChallengeRequest>(data);
    round_trip::<api::SessionRequest>(data);
    round_trip::<api::PrekeyUploadRequest>(data);
    round_trip::<api::FetchResponse>(data);
    round_trip::<api::ApiError>(data);
    round_trip::<api::MismatchedDevices>(data);
    round_trip::<api::Bytes>(data);
}
