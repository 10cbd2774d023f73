#!/usr/bin/env python3
"""Turns criterion's estimates (target/criterion) into docs/BENCHMARKS.md (stdout)."""
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

ROOT = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")


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


def relay_section(w):
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
    redis = r["redis"]
    w("")
    w("## Relay: `tacit bench relay` (issue 3 targets)")
    w("")
    w("`tacit server` on its embedded SQLite (WAL, `synchronous=FULL`, group commit: a send is")
    w("answered once it is fsynced), 100 clients each with its own account and WebSocket, 1 KiB")
    w("envelopes, client i sending to client i+1; a message counts when its recipient received it")
    w("over the WebSocket and wrote the acknowledgement. The load generator runs on the same 2")
    w(f"cores. Median of {r['modes'][0]['runs']} runs per mode (all runs listed).")
    w("")
    w("| mode | messages | delivered/s | p50 | p99 | all runs (delivered/s) | vs Redis XADD | target | met |")
    w("|---|---|---|---|---|---|---|---|---|")
    for m in r["modes"]:
        first = m["mode"] == "websocket, window 1"
        ok = m["delivered_per_s"] >= 20000
        if first:
            fails += not ok
        w(f"| {m['mode']} | {m['messages']:,} | {m['delivered_per_s']:,.0f} | {m['p50_ms']:.1f} ms | "
          f"{m['p99_ms']:.1f} ms | {', '.join(f'{x:,}' for x in m['all_delivered_per_s'])} | "
          f"{m['delivered_per_s'] / redis['rps']:.2f}x | {'>= 20,000/s' if first else ''} | "
          f"{('yes' if ok else '**no**') if first else ''} |")
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
    return fails


def main():
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

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w("Generated by `scripts/bench` (criterion medians; Tacit and vodozemac 0.11 measured in the same run, so")
    w("the ratios are what counts: absolute figures move from machine to machine). Do not edit by hand.")
    w("")
    w(f"- Commit `{rev}`, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    w(f"- CPU: {cpu()}, {os.cpu_count()} cores; release profile, no `target-cpu` flags")
    w("")
    w("## Protocol core against vodozemac (issue 2 targets)")
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
    w("| primitive | median |")
    w("|---|---|")
    for name in sorted(os.listdir(os.path.join(ROOT, "primitive"))):
        if os.path.isdir(os.path.join(ROOT, "primitive", name, "new")):
            w(f"| {name} | {us(p(name))} |")
    w("")
    w("Ed25519: Tacit verifies with AWS-LC after validating keys once at parse time with")
    w("`ed25519-dalek`; `ed25519_verify_strict_*` shows ed25519-dalek's `verify_strict` for comparison.")
    fails += relay_section(w)
    print("\n".join(out))
    if fails:
        print(f"{fails} target(s) missed", file=sys.stderr)


if __name__ == "__main__":
    main()
