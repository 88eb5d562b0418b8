"""A Mosquitto restart after a 5 s outage, with broker persistence on and off.

Proves (SPEC §5 "Connection lost"): homd notices the loss, retries with its back-off
(1 s doubling to 60 s, each wait jittered between half and all of it) and serves requests
again once the broker is back, within the longest back-off step that can span the outage
plus a slack. The figure (broker back -> first answered request) is printed (ctest -V).

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
MIN_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
# Connect, subscribe and one request on a loaded 2-core machine.
SLACK_S = 4.0
RESEND_EVERY_S = 0.2


def backoff_bound(outage_s):
    """The longest wait homd may still be in when the broker comes back after `outage_s`:
    the largest step b_k = min(2^k, 60) s whose earliest start (every earlier wait at its
    shortest, b_i / 2) is within the outage."""
    bound, earliest_start, step = 0.0, 0.0, MIN_BACKOFF_S
    while earliest_start <= outage_s:
        bound = step
        earliest_start += step / 2
        step = min(step * 2, MAX_BACKOFF_S)
    return bound


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
        daemon.process.wait_for_log("retrying in")  # it is backing off
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
        self.assertEqual(backoff_bound(0.2), 1.0)
        self.assertEqual(backoff_bound(1.0), 2.0)
        self.assertEqual(backoff_bound(5.3), 8.0)
        self.assertEqual(backoff_bound(1000.0), 60.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
