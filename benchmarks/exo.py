"""Exchange Online: psbridge's plan against the seed's algorithm over the same REST endpoint.

Both runs go through bridge.exchange.collect and bridge.exo.ExoSource (real MSAL, app-only
certificate sign-in) against the emulated Exchange Online (HTTPS on loopback, a fixed
latency per request), in the same process and the same run:

- baseline, the seed's algorithm: Get-Mailbox, then Get-MobileDeviceStatistics -Mailbox
  for every mailbox, one request at a time (``per-mailbox``, concurrency 1);
- the plan: Get-Mailbox and Get-MobileDevice -ResultSize Unlimited (paged) side by side,
  then Get-MobileDeviceStatistics only for the mailboxes with devices, 10 per $batch
  request, 3 requests at once (``bulk`` over a source without pipelines).

Targets: at least 20x fewer requests and at least 10x faster. The organisation is the
sandbox's generator, trimmed so exactly ``--with-devices`` user mailboxes keep devices.

    python -m benchmarks.exo                 # 10,000 mailboxes, 4,000 with devices, 20 ms
    python -m benchmarks.exo --quick         # 1,000 mailboxes, 400 with devices
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bridge.exchange import collect
from bridge.exo import ExoSource, SignIn, Tokens
from bridge.sandbox.exo_server import ExoSandbox
from bridge.sandbox.organisation import Organisation
from bridge.sandbox.tls import write_app_certificate

APP_ID = "0f5e3c2a-7d41-4b8e-9c36-2a1b0c9d8e77"


def organisation(mailboxes: int, with_devices: int, seed: int) -> Organisation:
    """The generator's organisation with devices left on ``with_devices`` user mailboxes."""
    org = Organisation(mailboxes=mailboxes, seed=seed)
    kept = 0
    for mailbox in org.mailbox_entries:
        if mailbox.devices and mailbox.kind == "user" and kept < with_devices:
            kept += 1
        else:
            mailbox.devices = []
    return org


def _run(exo: ExoSandbox, tokens: Tokens, strategy: str, concurrency: int
         ) -> tuple[float, int, int, int]:
    before = exo.service.requests["InvokeCommand"] + exo.service.requests["$batch"]
    source = ExoSource(tokens, exo.tenant, endpoint=exo.endpoint, verify=str(exo.ca_file),
                       concurrency=concurrency)
    started = time.perf_counter()
    with source:
        result = collect(source, strategy, concurrency=concurrency)
    seconds = time.perf_counter() - started
    sent = exo.service.requests["InvokeCommand"] + exo.service.requests["$batch"] - before
    return seconds, sent, len(result.devices), len(result.errors)


def _show(label: str, measured: tuple[float, int, int, int]) -> None:
    seconds, sent, found, errors = measured
    print(f"  {label}\n    {seconds:8.1f} s  {sent:7,} requests  {found:,} devices, "
          f"{errors} errors", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--with-devices", type=int, default=4_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="1,000 mailboxes, 400 with devices")
    args = parser.parse_args()
    mailboxes, with_devices = ((1_000, 400) if args.quick
                               else (args.mailboxes, args.with_devices))
    org = organisation(mailboxes, with_devices, seed=1)
    users = [m for m in org.mailbox_entries if m.kind == "user"]
    owners = sum(1 for m in users if m.devices)
    devices = sum(len(m.devices) for m in users)
    with tempfile.TemporaryDirectory() as folder, ExoSandbox(
            organisation=org, latency_ms=args.latency_ms) as exo:
        certificate, public = write_app_certificate(Path(folder))
        exo.entra.register_app(APP_ID, certificate_pem=public, roles=["Global Reader"])
        host = exo.authority.rsplit("/", 1)[0]
        tokens = Tokens(SignIn(tenant=exo.tenant, app_id=APP_ID, certificate=certificate,
                               authority_host=host, verify=str(exo.ca_file)))
        tokens.token()
        print(f"emulated Exchange Online: {mailboxes:,} mailboxes ({len(users):,} user "
              f"mailboxes, {owners:,} with devices, {devices:,} devices), "
              f"{args.latency_ms:g} ms per request, in this process", flush=True)
        plan = _run(exo, tokens, "bulk", 3)
        _show("plan: mailboxes + devices paged, statistics 10 per $batch, 3 at once", plan)
        baseline = _run(exo, tokens, "per-mailbox", 1)
        _show("seed's algorithm: one statistics request per mailbox, sequential (baseline)",
              baseline)
    assert plan[2] == baseline[2] == devices, (plan, baseline, devices)
    print(f"requests: {baseline[1] / plan[1]:.1f}x fewer (target 20x); "
          f"wall time: {baseline[0] / plan[0]:.1f}x faster (target 10x)")


if __name__ == "__main__":
    main()
