"""A Mosquitto restart after a 5 s outage, with broker persistence on and off.

Proves (SPEC §5 "Connection lost"): homd notices the loss, waits a jittered first retry
(0-8 s, include/hom/backoff.hpp), retries with its back-off (windows doubling to 60 s, each
wait drawn from zero to the window) and serves requests again once the broker is back,
within the largest window it can be in plus a slack. The figure (broker back -> first
answered request) is printed (ctest -V).

With persistence on, homd's session and subscription survive the restart; with it off they
are gone until homd reconnects and subscribes again, so the requester keeps sending fresh
requests until one is answered.
"""

import json
import time
import unittest

import harness
from harness import InteropTest

OUTAGE_S = 5.0
LOSS_WINDOW_S, MAX_BACKOFF_S = 8.0, 60.0
# Connect, subscribe and one request on a loaded 2-core machine.
SLACK_S = 4.0
RESEND_EVERY_S = 0.2


def backoff_bound(outage_s):
    """The largest window homd may be waiting in when the broker comes back after
    `outage_s`: with full jitter every wait may be close to zero, so any window reachable by
    doubling from the first one (8 s) may be pending, up to the cap."""
    return LOSS_WINDOW_S if outage_s <= 0 else MAX_BACKOFF_S


class BrokerRestartTest(InteropTest):
    def check_restart(self, persistence):
        device = f"restart-{'p' if persistence else 'np'}"
        broker = self.mosquitto(persistence=persistence)
        http = self.api()
        daemon = self.homd(broker.port, http.url, device)
        daemon.wait_connected()
        before = harness.run_hom(["get", device, "gps/latitude", "--timeout", "20s"],
                                 harness.hom_env(broker.port))
        self.assertEqual(before.returncode, 0, before)

        down = time.monotonic()
        broker.stop()
        daemon.process.wait_for_log("connection to the broker lost")
        daemon.process.wait_for_log("reconnecting in")  # the first retry is jittered
        # The outage itself: a length of time, not a synchronisation.
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        broker.start()
        up = time.monotonic()
        outage = up - down
        bound = backoff_bound(outage) + SLACK_S

        requester = self.client(broker.port, version=5)
        requester.subscribe(f"v1/res/{device}/#", 1)
        reply = None
        for i in range(int((bound + 5.0) / RESEND_EVERY_S)):
            requester.publish(f"v1/req/{device}/get/gps/latitude",
                              json.dumps({"req_id": f"after-{i}"}), qos=1)
            try:
                reply = requester.wait_message(
                    lambda m: m.json().get("status") == 200, timeout=RESEND_EVERY_S)
                break
            except AssertionError:
                continue
        self.assertIsNotNone(reply, f"no request answered after the restart:\n"
                                    f"{harness.tail(daemon.log())}")
        took = reply.received - up
        harness.log(f"\nbroker restart (persistence {'on' if persistence else 'off'}): "
                    f"outage {outage:.2f} s, broker back -> first answered request "
                    f"{took:.2f} s (bound {bound:.1f} s)\n"
                    f"{harness.tail(daemon.log(), 8)}")
        self.assertLessEqual(took, bound, harness.tail(daemon.log()))
        self.assertGreaterEqual(daemon.log().count("connected to "), 2)

    def test_restart_with_persistence(self):
        self.check_restart(persistence=True)

    def test_restart_without_persistence(self):
        self.check_restart(persistence=False)

    def test_backoff_bound(self):
        self.assertEqual(backoff_bound(0.0), 8.0)
        self.assertEqual(backoff_bound(5.0), 60.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
