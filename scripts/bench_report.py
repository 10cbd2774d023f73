#!/usr/bin/env python3
"""Turns criterion's estimates (target/criterion, with the commit scripts/bench recorded in
target/bench-protocol.json), scripts/bench_relay's target/bench-relay.json and
scripts/bench_history's target/bench-history.json into
docs/BENCHMARKS.md (stdout). Every section names the commit it measured. With
`--previous FILE` (the BENCHMARKS.md being replaced), the relay's window-1 figure is shown
next to the last published one."""
import json
import os
import platform
import re
import sys

ROOT = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.dirname(__file__), "..", "target"),
                    "criterion")
PROTOCOL = os.path.join(os.path.dirname(__file__), "..", "target", "bench-protocol.json")


def measured(meta):
    """The line that names what a section measured."""
    return f"Measured on commit `{meta.get('commit', 'unknown')}`, {meta.get('measured', 'unknown time')}."


def previous_window1(path):
    """The last published websocket window-1 figure and its commit, from an old BENCHMARKS.md."""
    if not path or not os.path.exists(path):
        return None
    text = open(path, encoding="utf-8").read()
    rate = re.search(r"^\| websocket, window 1 \| [^|]+ \| ([\d,]+) \|", text, re.M)
    if not rate:
        return None
    relay = text[text.find("## Relay"):]
    commit = re.search(r"commit `([^`]+)`", relay) or re.search(r"Commit `([^`]+)`", text)
    return int(rate.group(1).replace(",", "")), commit.group(1) if commit else "unknown"


def previous_redis_rps(path):
    """The Redis figure published beside the last relay figure (the same peer, another day)."""
    if not path or not os.path.exists(path):
        return None
    m = re.search(r"^\| peer: Redis [^|]+\| \| ([\d,]+) \|", open(path, encoding="utf-8").read(), re.M)
    return int(m.group(1).replace(",", "")) if m else None


def median_ns(group, name):
    path = os.path.join(ROOT, group, name, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def us(ns):
    return f"{ns / 1000:.2f} µs" if ns < 1_000_000 else f"{ns / 1e6:.2f} ms"


def cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


RELAY = os.path.join(os.path.dirname(__file__), "..", "target", "bench-relay.json")


def relay_section(w, previous, previous_redis=None):
    """The relay figures from scripts/bench_relay; returns the number of missed targets."""
    if not os.path.exists(RELAY):
        w("")
        w("## Relay")
        w("")
        w("Not measured in this run (`scripts/bench_relay` writes `target/bench-relay.json`).")
        return 1
    with open(RELAY) as f:
        r = json.load(f)
    fails = 0
    fs = r.get("data_filesystem", {})
    where = (f"The data folder was on {fs.get('type', 'an unrecorded filesystem')} "
             f"(`{fs.get('source', '?')}`, mounted `{fs.get('options', '?')}`).")
    if not r["modes"]:
        fails += abuse_section(w, r, where)
        return fails
    redis = r.get("redis")
    w("")
    w("## Relay: `tacit bench relay` (issue 3 targets)")
    w("")
    w(measured(r))
    w("")
    w("`tacit server` on its embedded SQLite (WAL, `synchronous=FULL`, group commit: a send is")
    w("answered once it is fsynced), 100 clients each with its own account and WebSocket, 1 KiB")
    w("envelopes, client i sending to client i+1; a message counts when its recipient received it")
    w("over the WebSocket and wrote the acknowledgement, each envelope once (a duplicate or a")
    w("missing one fails the run), and the clock stops when every mailbox is empty on the server.")
    w(f"{where} The load generator runs on the same")
    w(f"{os.cpu_count()} cores. Median of {r['modes'][0]['runs']} runs per mode (all runs listed).")
    w("")
    w("| mode | messages | delivered/s | p50 | p99 | all runs (delivered/s) | vs Redis XADD | target | met |")
    w("|---|---|---|---|---|---|---|---|---|")
    for m in r["modes"]:
        first = m["mode"] == "websocket, window 1"
        ok = m["delivered_per_s"] >= 20000
        if first:
            fails += not ok
        vs = f"{m['delivered_per_s'] / redis['rps']:.2f}x" if redis else ""
        w(f"| {m['mode']} | {m['messages']:,} | {m['delivered_per_s']:,.0f} | {m['p50_ms']:.1f} ms | "
          f"{m['p99_ms']:.1f} ms | {', '.join(f'{x:,}' for x in m['all_delivered_per_s'])} | "
          f"{vs} | {'>= 20,000/s' if first else ''} | "
          f"{('yes' if ok else '**no**') if first else ''} |")
    if redis:
        w(f"| peer: Redis {redis['version']} Streams, appendfsync always, XADD only (redis-benchmark, 100 "
          f"connections) | | {redis['rps']:,.0f} | {redis['p50_ms']:.1f} ms | {redis['p99_ms']:.1f} ms | "
          f"{', '.join(f'{x:,}' for x in redis['all_rps'])} | 1x | | |")
    w("")
    w("\"window W\": each client keeps up to W sends waiting for the server's \"stored\" answer")
    w("(window 1: a client sends its next message only once the previous one is durable). \"http\":")
    w("one `POST /v1/messages` per message instead of a `send` frame on the socket. Redis only")
    w("appends (nobody reads, acknowledges or deletes), from a load generator written in C; Tacit's")
    w("figure is end to end: store, deliver, acknowledge, delete.")
    w("")
    idle = r["idle_rss_kib"] / 1024
    ok = idle < 30
    fails += not ok
    w("| memory | measured | target | met |")
    w("|---|---|---|---|")
    w(f"| idle `tacit server` RSS (SQLite, 2 s after start-up) | {idle:.1f} MiB | < 30 MiB | "
      f"{'yes' if ok else '**no**'} |")
    w(f"| RSS after the runs above | {r['rss_after_runs_kib'] / 1024:.1f} MiB | | |")
    one = next((m for m in r["modes"] if m["mode"] == "websocket, window 1"), None)
    if previous and one:
        rate, commit = previous
        w("")
        w("| websocket, window 1 | delivered/s | change |")
        w("|---|---|---|")
        w(f"| last published (commit `{commit}`, another day) | {rate:,} | |")
        w(f"| this run (commit `{r.get('commit', 'unknown')}`) | {one['delivered_per_s']:,.0f} | "
          f"{one['delivered_per_s'] / rate - 1:+.1%} |")
        if redis and previous_redis:
            w("")
            w(f"The peer moved too: Redis measured {previous_redis:,}/s with the last published figure and "
              f"{redis['rps']:,.0f}/s in this run ({redis['rps'] / previous_redis - 1:+.1%}), so figures from two")
            w("days compare the machine as much as the code; the same-run comparison below decides.")
    fails += compare_section(w)
    fails += abuse_section(w, r, where)
    return fails


FANOUT = (1, 10, 100)
FANOUT_TARGET = 1.2


def fanout_section(w, proto):
    """Issue 9: time per recipient device of one message sent to N devices, against the
    single-device encrypt (criterion group `fanout`, same run); returns missed targets."""
    w("")
    w("## Fan-out (issue 9)")
    w("")
    try:
        single = median_ns("fanout", "single")
        per = [(n, median_ns("fanout", f"devices/{n}") / n) for n in FANOUT]
    except OSError:
        w("Not measured in this run (criterion group `fanout` of `benches/protocol.rs`).")
        return 1
    w(measured(proto))
    w("")
    w("One 100-byte text sent to N devices over established sessions (each in the steady ratchet")
    w("state, each with a different device): per device, what the client does: `Session::encrypt`,")
    w("the wire message's bytes and `Session::to_bytes` of the advanced session (what it stores for")
    w("the device). The single-device encrypt is the same on one session, measured on its own.")
    w("")
    w("| N | time per device | ratio to the single encrypt | target | met |")
    w("|---|---|---|---|---|")
    fails = 0
    for n, t in per:
        ratio = t / single
        ok = ratio <= FANOUT_TARGET
        fails += not ok
        w(f"| {n} | {t / 1000:.2f} µs | {ratio:.2f}x | <= {FANOUT_TARGET}x | {'yes' if ok else '**no**'} |")
    w(f"| single-device encrypt | {single / 1000:.2f} µs | 1x | | |")
    try:
        one = median_ns("device_list_verify", "devices/1")
        full = median_ns("device_list_verify", "devices/32")
    except OSError:
        return fails
    per_device = (full - one) / 31
    w("")
    w("Beside the encryption, a send checks the recipient's device list (`DeviceList::verify`, group")
    w(f"`device_list_verify`): {us(one)} for a list of 1 device, {us(full)} for 32, so {us(per_device)} per")
    w(f"device ({per_device / single:.0f}x the single encrypt) each time a list is verified.")
    try:
        load = median_ns("session_load", "from_bytes")
    except OSError:
        return fails
    w("")
    w(f"Loading a device's session from the store (`Session::from_bytes`, group `session_load`) takes {us(load)}")
    w(f"({load / single:.0f}x the single encrypt): it parses the remote device's Ed25519 key.")
    return fails


HISTORY = os.path.join(os.path.dirname(__file__), "..", "target", "bench-history.json")


def history_section(w):
    """The history transfer figures from scripts/bench_history; returns the missed targets."""
    w("")
    w("## History transfer (issue 9: linking with 100,000 messages of history)")
    w("")
    if not os.path.exists(HISTORY):
        w("Not measured in this run (`scripts/bench_history` writes `target/bench-history.json`).")
        return 1
    with open(HISTORY) as f:
        h = json.load(f)
    w(measured(h))
    w("")
    w(f"`scripts/bench_history` (profile: {h.get('profile', 'release')}): {h['messages']:,} chat-like messages "
      f"({h['text_bytes'] / 1e6:.1f} MB of text, {h['record_bytes'] / 1e6:.1f} MB as archive records) exported by "
      "one device (records, deflate, chunked AEAD, a temp file), uploaded as a blob to the real server on "
      "loopback (SQLite), downloaded by a second store and imported in one transaction. Peak RSS is the "
      "VmHWM of the one process that runs the server and both clients, from just before the export.")
    w("")
    ok = h["total_secs"] < 30
    w("| measure | figure | target | met |")
    w("|---|---|---|---|")
    w(f"| export + upload | {h['export_upload_secs']:.2f} s | | |")
    w(f"| download + import | {h['download_import_secs']:.2f} s | | |")
    w(f"| total | {h['total_secs']:.2f} s | < 30 s | {'yes' if ok else '**no**'} |")
    w(f"| archive (ciphertext) | {h['archive_bytes'] / 1e6:.1f} MB "
      f"({h['record_bytes'] / h['archive_bytes']:.2f}x smaller than its records) | | |")
    w(f"| peak RSS during the transfer | {h['peak_rss_mib']} MiB (before it: {h['rss_before_mib']} MiB) | "
      "bounded: streamed, never the whole history in memory | |")
    levels = h.get("deflate", [])
    if levels:
        w("")
        w("Deflate (miniz_oxide) on the same records, in memory; the archive uses level 3:")
        w("")
        w("| level | ratio | compress | inflate |")
        w("|---|---|---|---|")
        for d in levels:
            w(f"| {d['level']} | {d['ratio']:.2f}x | {d['compress_mb_per_sec']:.0f} MB/s | "
              f"{d['inflate_mb_per_sec']:.0f} MB/s |")
    return 0 if ok else 1


COMPARE = os.path.join(os.path.dirname(__file__), "..", "target", "bench-compare.json")


def compare_section(w):
    """scripts/bench_compare: this commit's relay against a base commit in the same run; the
    window-1 target (at most 5% slower) is decided here. Returns missed targets."""
    w("")
    w("### Same run: this commit's server against the base's (`scripts/bench_compare`)")
    w("")
    if not os.path.exists(COMPARE):
        w("Not measured in this run (`scripts/bench_compare` writes `target/bench-compare.json`).")
        return 1
    c = json.load(open(COMPARE))
    w(f"Measured {c['measured']}. Both servers alternate on fresh data folders, driven by the same")
    w("client (this commit's `tacit bench relay`, 100 clients, 100,000 1 KiB envelopes, window 1).")
    w("")
    change = c["head"]["delivered_per_s"] / c["base"]["delivered_per_s"] - 1
    ok = change >= -0.05
    w("| server | delivered/s (median) | p99 | all runs | change | target | met |")
    w("|---|---|---|---|---|---|---|")
    for k in ("base", "head"):
        m = c[k]
        last = k == "head"
        w(f"| {'base' if k == 'base' else 'this commit'} `{c[k + '_commit']}` | {m['delivered_per_s']:,.0f} | "
          f"{m['p99_ms']:.1f} ms | {', '.join(f'{x:,}' for x in m['all_delivered_per_s'])} | "
          f"{f'{change:+.1%}' if last else ''} | {'at most 5% lower' if last else ''} | "
          f"{('yes' if ok else '**no**') if last else ''} |")
    return 0 if ok else 1


def abuse_section(w, r, where):
    """The quiet-versus-abuse figures (`tacit bench relay --abuse`); returns missed targets."""
    a = r.get("abuse")
    w("")
    w("## Relay under abuse: `tacit bench relay --abuse`")
    w("")
    if not a:
        w("Not measured in this run.")
        return 1
    w(measured(r))
    w("")
    f = a["flood"]
    c, acc, reads, acks = f["connections"], f["account_creations"], f["device_list_reads"], f["ack_frames"]
    honest = ", ".join(a.get("honest_from", ["127.0.0.1"]))
    w(f"{a['clients']} honest clients from {honest} send {a['messages']:,} 1 KiB envelopes (window 1, as above)")
    w("twice on a fresh `tacit server` with its default limits: quiet, then while one address")
    w(f"({f['from']}) floods it at those limits, read from the server's config file: it holds")
    w(f"{c['tried_at_once']:,} idle half-sent requests open (the per-address cap is {c['cap_per_address']:,}),")
    w(f"creates accounts ({acc['burst']:,} at once, then twice the {acc['per_hour']}/h allowed), reads")
    w(f"device lists ({reads['burst']:,} at once, then twice the {reads['per_second']}/s allowed), and sends")
    w(f"acknowledgement frames of {acks['ids_per_frame']:,} made-up ids on {acks['sockets']} WebSockets as fast")
    w("as the server reads them. The run fails if an honest message is missing or duplicated or")
    w(f"an honest request is refused. {where} Flooder, honest")
    w(f"clients and server share the same {os.cpu_count()} cores. Median of {a['runs']} runs.")
    w("")
    w("| honest clients | delivered/s | p50 | p99 | all runs (delivered/s) |")
    w("|---|---|---|---|---|")
    for phase, runs in (("quiet", a["all_quiet_per_s"]), ("abuse", a["all_abuse_per_s"])):
        m = a[phase]
        w(f"| {'quiet' if phase == 'quiet' else 'under abuse'} | {m['delivered_per_s']:,.0f} | "
          f"{m['p50_ms']:.1f} ms | {m['p99_ms']:.1f} ms | {', '.join(f'{x:,}' for x in runs)} |")
    w("")
    w("| flood (median run) | done | refused by the server | other |")
    w("|---|---|---|---|")
    w(f"| connections opened (peak open at once: {c['peak_open']:,}) | {c['opened']:,} | "
      f"{c['closed_by_server']:,} closed by the server | {c['failed']:,} failed to connect |")
    w(f"| account creations | {acc['ok']:,} | {acc['refused']:,} | {acc['failed']:,} |")
    w(f"| device-list reads | {reads['ok']:,} (+{reads['not_found']:,} not found) | {reads['refused']:,} | "
      f"{reads['failed']:,} |")
    w(f"| acknowledgement frames | {acks['frames']:,} | | {acks['reconnects']} reconnections |")
    return 0


SOAK_HEADING = "## Multi-device soak"


def soak_section(f):
    """The "Multi-device soak" section from scripts/soak's figures (target/soak.json)."""
    out = [SOAK_HEADING, "", measured(f), ""]
    w = out.append
    w(f"`scripts/soak`: the randomised soak of `crates/client/tests/soak.rs` (issue 9) with "
      f"{f['steps']:,} steps, seed {f['seed']} (`STEPS={f['steps']} SEED={f['seed']}"
      + (f" SKIP={f['skipped']}" if f.get("skipped") else "") + " scripts/soak` replays "
      f"the same steps), the server on {f['backend']}, test profile (opt-level 1, dependencies 3). "
      "3 accounts, up to 3 live devices each"
      + (f"; actions left out (`TACIT_SOAK_SKIP`): {f['skipped']}" if f.get("skipped") else "")
      + ". It passed: every live device had every message meant for it "
      "exactly once, none was left undecryptable, and no revoked device received anything sent after its "
      "revocation.")
    if f.get("skipped"):
        w("")
        w(f"Left out because runs with them did not pass on this commit: {f['skipped']}.")
    w("")
    w("| measure | count |")
    w("|---|---|")
    rows = [
        ("wall time", f"{f['wall_secs']:,.0f} s"),
        ("messages sent (notes to self among them)", f"{f['messages']:,} ({f['notes_to_self']:,})"),
        ("pairs of devices writing to each other at the same moment", f"{f['concurrent_starts']:,}"),
        ("receives / envelopes processed", f"{f['receives']:,} / {f['envelopes_processed']:,}"),
        ("envelopes dropped (left on the server) / duplicated / replayed after their ack",
         f"{f['dropped']:,} / {f['duplicated']:,} / {f['replayed']:,}"),
        ("batches reordered", f"{f['reordered_batches']:,}"),
        ("devices linked (with history / as approvers)",
         f"{f['devices_linked']:,} ({f['linked_with_history']:,} / {f['linked_as_approver']:,})"),
        ("devices revoked (account key rotations) / logged out",
         f"{f['revoked']:,} ({f['rotations']:,}) / {f['logged_out']:,}"),
        ("revocations of the last approver refused", f"{f['last_approver_refused']:,}"),
        ("offline periods / restarts", f"{f['offline_periods']:,} / {f['restarts']:,}"),
        ("home copies taken / restored", f"{f['snapshots']:,} / {f['restores']:,}"),
        ("messages lost by a restore (stored and acknowledged after the copy was taken)",
         f"{f['lost_by_restore']:,}"),
        ("expected copies missing whose sending device no longer held them (restored to an older copy, "
         "revoked; exempt)", f"{f['exempt_missing']:,}"),
        ("\"could not decrypt\" warnings on the way (all healed by the end)", f"{f['undecryptable_warnings']:,}"),
        ("receive attempts by revoked devices", f"{f['revoked_receives']:,}"),
        ("drain rounds at the end", f"{f['drain_rounds']:,}"),
        ("live devices at the end", f"{f['devices_live_at_end']:,}"),
    ]
    for r in rows:
        w(f"| {r[0]} | {r[1]} |")
    return out


def previous_soak_section(path):
    """The soak section of an old BENCHMARKS.md, verbatim (scripts/bench does not rerun it)."""
    if not path or not os.path.exists(path):
        return []
    text = open(path, encoding="utf-8").read()
    start = text.find(SOAK_HEADING)
    if start < 0:
        return []
    end = text.find("\n## ", start + len(SOAK_HEADING))
    return text[start:end if end >= 0 else len(text)].rstrip("\n").split("\n")


def splice_soak(figures_path, doc_path):
    """`--soak FIGURES DOC`: DOC with its soak section replaced by one from FIGURES (stdout)."""
    with open(figures_path) as f:
        section = "\n".join(soak_section(json.load(f)))
    text = open(doc_path, encoding="utf-8").read().rstrip("\n") + "\n"
    start = text.find(SOAK_HEADING)
    if start < 0:
        text = text + "\n" + section + "\n"
    else:
        end = text.find("\n## ", start + len(SOAK_HEADING))
        rest = text[end + 1:] if end >= 0 else ""
        text = text[:start] + section + "\n" + ("\n" + rest if rest else "")
    sys.stdout.write(text)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--soak":
        splice_soak(sys.argv[2], sys.argv[3])
        return
    previous = None
    previous_path = None
    if len(sys.argv) == 3 and sys.argv[1] == "--previous":
        previous_path = sys.argv[2]
        previous = previous_window1(sys.argv[2])
        previous_redis = previous_redis_rps(sys.argv[2])
    proto = {}
    if os.path.exists(PROTOCOL):
        with open(PROTOCOL) as f:
            proto = json.load(f)
    p = lambda n: median_ns("primitive", n)
    rows = []
    fails = 0

    def compare(label, group, target, kind):
        nonlocal fails
        t, v = median_ns(group, "tacit"), median_ns(group, "vodozemac")
        if kind == "speedup":
            ratio = v / t
            ok = ratio >= target
            shown = f"{ratio:.2f}x faster"
            want = f">= {target}x faster"
        else:
            ratio = t / v
            ok = ratio <= target
            shown = f"{ratio:.2f}x vodozemac's time"
            want = f"<= {target}x"
        fails += not ok
        rows.append((label, us(t), us(v), shown, want, "yes" if ok else "**no**"))

    compare("Ratchet encrypt + decrypt, 100 B, existing chain", "ratchet_100B", 5.0, "speedup")
    compare("Ping-pong A→B, B→A, A→B, B→A (DH step each turn)", "ping_pong", 0.75, "ratio")
    compare("Session setup (bundle + signatures → PQXDH/ML-KEM-1024 → first message → receiver)",
            "session_setup", 1.25, "ratio")

    verify = p("ed25519_verify_awslc_32B") + p("ed25519_verify_awslc_1600B")
    setup_sum = (verify + 2 * p("x25519_keygen") + 10 * p("x25519_dh")
                 + p("mlkem1024_encaps") + p("mlkem1024_decaps"))
    setup = median_ns("session_setup", "tacit")
    setup_ratio = setup / setup_sum
    fails += setup_ratio > 1.3
    ratchet_sum = 2 * (p("hmac_sha256_32B_x2") + p("hkdf_sha256_44B")) + p("aes256gcmsiv_seal_open_256B")
    ratchet = median_ns("ratchet_100B", "tacit")

    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Generated by `scripts/bench` (criterion medians; Tacit and vodozemac 0.11 measured in the same run, so")
    w("the ratios are what counts: absolute figures move from machine to machine). Do not edit by hand.")
    w("")
    w(f"- CPU: {cpu()}, {os.cpu_count()} cores; release profile, no `target-cpu` flags")
    w("- Each section names the commit it measured.")
    w("")
    w("## Protocol core against vodozemac (issue 2 targets)")
    w("")
    w(measured(proto))
    w("")
    w("| measure | Tacit | vodozemac | ratio | target | met |")
    w("|---|---|---|---|---|---|")
    for r in rows:
        w("| " + " | ".join(r) + " |")
    w("")
    w("Tacit's session setup includes what vodozemac's Olm does not: two Ed25519 signature checks")
    w("(signed prekey and KEM prekey), ML-KEM-1024 encapsulation and decapsulation, and a fourth DH.")
    w("")
    w("## Against the primitives it is made of (same run)")
    w("")
    w(measured(proto))
    w("")
    w("| measure | Tacit | sum of its primitives | ratio | target | met |")
    w("|---|---|---|---|---|---|")
    w(f"| Session setup: 2 Ed25519 verifications, 2 X25519 key generations, 10 X25519 DH, "
      f"ML-KEM-1024 encaps + decaps | {us(setup)} | {us(setup_sum)} | {setup_ratio:.2f}x | <= 1.3x | "
      f"{'yes' if setup_ratio <= 1.3 else '**no**'} |")
    w(f"| Ratchet 100 B: per side 2 HMAC + HKDF (44 B), AES-256-GCM-SIV seal + open of 256 B | {us(ratchet)} | "
      f"{us(ratchet_sum)} | {ratchet / ratchet_sum:.2f}x | | |")
    w("")
    w("## Primitives")
    w("")
    w(measured(proto))
    w("")
    w("| primitive | median |")
    w("|---|---|")
    for name in sorted(os.listdir(os.path.join(ROOT, "primitive"))):
        if os.path.isdir(os.path.join(ROOT, "primitive", name, "new")):
            w(f"| {name} | {us(p(name))} |")
    w("")
    w("Ed25519: Tacit verifies with AWS-LC after validating keys once at parse time with")
    w("`ed25519-dalek`; `ed25519_verify_strict_*` shows ed25519-dalek's `verify_strict` for comparison.")
    fails += fanout_section(w, proto)
    fails += history_section(w)
    fails += relay_section(w, previous, previous_redis)
    soak = previous_soak_section(previous_path)
    if soak:
        w("")
        out.extend(soak)
    print("\n".join(out))
    if fails:
        print(f"{fails} target(s) missed", file=sys.stderr)


if __name__ == "__main__":
    main()
