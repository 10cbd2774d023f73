//! A conversation between two devices using only the protocol core: key generation, a
//! signed device list, a prekey bundle, PQXDH, the Double Ratchet with out-of-order
//! delivery, and the safety number both sides would compare.
//!
//! Run with `cargo run --release -p tacit-protocol --example conversation`.

use rand_core::OsRng;
use tacit_protocol::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rng = &mut OsRng;
    let device = DeviceId::new(1).ok_or("device ids are non-zero")?;
    let alice_name = AccountName::new("alice")?;
    let bob_name = AccountName::new("bob")?;
    let alice_addr = DeviceAddress { account: alice_name.clone(), device };
    let bob_addr = DeviceAddress { account: bob_name.clone(), device };

    // Each side: an account identity, a device identity, a signed device list.
    let alice_account = AccountIdentity::generate(rng)?;
    let bob_account = AccountIdentity::generate(rng)?;
    let alice = DeviceIdentity::generate(rng)?;
    let bob = DeviceIdentity::generate(rng)?;
    let bob_list = DeviceList::sign(
        &bob_account,
        bob_name.clone(),
        1,
        vec![DeviceEntry { approver: true, ..DeviceEntry::new(device, bob.public().clone()) }],
    )?;

    // Bob publishes prekeys.
    let mut bob_prekeys = DevicePrekeys::new();
    let plan = bob_prekeys.plan(UnixTime(1_800_000_000), &PrekeyPolicy::default(), 0, 0);
    let upload = bob_prekeys.execute(rng, &bob, UnixTime(1_800_000_000), &plan)?;
    println!(
        "bob uploads 1 signed prekey, 1 last-resort ML-KEM-1024 key, {} one-time X25519 and {} one-time ML-KEM keys",
        upload.one_time.len(),
        upload.kem_one_time.len()
    );
    let bundle_bytes = bob_prekeys.bundle(bob_addr.clone(), &bob).ok_or("no bundle")?.to_bytes();
    println!("bob's prekey bundle: {} bytes", bundle_bytes.len());

    // Alice verifies Bob's device list, then starts a session from the bundle.
    let list = DeviceList::verify(&bob_list.to_bytes(), &bob_name, None, None)?;
    let bob_device = list.verified_device(device).ok_or("bob's device is not listed")?;
    let bundle = PrekeyBundle::from_bytes(&bundle_bytes)?;
    // (Bob verifies Alice's device list the same way; here he pins her device directly.)
    let alice_device = VerifiedDevice::dangerous_assume_verified(alice_addr.clone(), alice.public().clone());
    let mut a = Session::initiate(rng, &alice, alice_addr.clone(), &bundle, &bob_device, UnixTime(0))?;

    let first = a.encrypt(rng, b"hi bob, this is PQXDH")?.to_bytes();
    println!("alice -> bob  initial message: {} bytes on the wire", first.len());
    let Message::Prekey(first) = Message::from_bytes(&first)? else {
        return Err("expected a prekey message".into());
    };
    let (mut b, text) = Session::accept(&bob, bob_addr, &mut bob_prekeys, &alice_device, &first)?;
    println!("bob reads:    {}", String::from_utf8_lossy(&text));

    let reply = b.encrypt(rng, b"hi alice")?.to_bytes();
    println!(
        "alice reads:  {}  ({} bytes on the wire)",
        String::from_utf8_lossy(&a.decrypt_bytes(&reply)?),
        reply.len()
    );

    // Out-of-order delivery: three messages arrive 3, 1, 2; a replay is refused.
    let m: Vec<Vec<u8>> = ["one", "two", "three"]
        .iter()
        .map(|t| a.encrypt(rng, t.as_bytes()).map(|m| m.to_bytes()))
        .collect::<Result<_, _>>()?;
    let [one, two, three] = m.as_slice() else { return Err("three messages".into()) };
    for wire in [three, one, two] {
        println!("bob reads:    {}", String::from_utf8_lossy(&b.decrypt_bytes(wire)?));
    }
    println!(
        "replay of \"one\": {}",
        b.decrypt_bytes(one).err().map_or("accepted?!".into(), |e| e.to_string())
    );

    let sn_alice = SafetyNumber::new(&alice_name, &alice_account.public(), &bob_name, &bob_account.public());
    let sn_bob = SafetyNumber::new(&bob_name, &bob_account.public(), &alice_name, &alice_account.public());
    println!("safety number (alice): {}", sn_alice.display());
    println!("safety number (bob):   {}", sn_bob.display());
    sn_alice.compare_scanned(&sn_bob.scannable())?;
    println!("QR payload scanned by alice matches bob's: yes");
    Ok(())
}
