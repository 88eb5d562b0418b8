"""mosquitto_rr (Mosquitto's own MQTT 5 request/response client) against homd on Mosquitto.

Proves (SPEC §2 "MQTT 5", §5.1 "Reply cache key"):
- a Response Topic under {start}/res/{id}/ is answered there, with the request's Correlation
  Data and Content Type application/json, and not on the mirrored topic;
- a Response Topic outside it gets a 400 on the mirrored topic, and nothing is published on
  the requested one;
- two different requests (other path, or other body) sent with the same Response Topic and
  the same Correlation Data (`-D publish correlation-data fixed`) each get their own reply,
  executed, never the first one's from the reply cache;
- a true duplicate (same topic, payload, Response Topic and Correlation Data) is answered
  from the cache without a second call to the API.
"""

import json
import subprocess
import unittest

import harness
from harness import InteropTest

DEVICE = "rr-dev"


class MosquittoRrTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.broker = self.mosquitto()
        self.http = self.api()
        self.daemon = self.homd(self.broker.port, self.http.url, DEVICE)
        self.daemon.wait_connected()
        # A third-party observer of everything homd publishes, and of the foreign topic.
        self.observer = self.client(self.broker.port, version=5)
        self.observer.subscribe(f"v1/res/{DEVICE}/#", 2)
        self.observer.subscribe("elsewhere/#", 2)

    def rr_argv(self, topic, response_topic, payload, correlation=None, wait_s=20):
        argv = [harness.binary("MOSQUITTO_RR_BIN", "mosquitto_rr"), "-V", "5",
                "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1",
                "-t", topic, "-e", response_topic, "-m", payload, "-W", str(wait_s)]
        if correlation is not None:
            argv += ["-D", "publish", "correlation-data", correlation]
        return argv

    def rr(self, topic, response_topic, payload, correlation=None):
        """Runs mosquitto_rr to completion; returns the reply document it printed."""
        argv = self.rr_argv(topic, response_topic, payload, correlation)
        done = subprocess.run(["setpriv", "--pdeathsig", "KILL", "--"] + argv,
                              env=harness.base_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60, check=False)
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        self.assertEqual(done.returncode, 0,
                         f"mosquitto_rr failed: {err}{out}\nhomd:\n{harness.tail(self.daemon.log())}")
        lines = [line for line in out.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, f"mosquitto_rr printed: {out!r}")
        return json.loads(lines[0])

    def test_response_topic_inside_the_device_prefix_is_answered_there(self):
        inbox = f"v1/res/{DEVICE}/rr/inbox-1"
        reply = self.rr(f"v1/req/{DEVICE}/get/gps/latitude", inbox, '{"req_id":"in-1"}',
                        correlation="corr-1")
        self.assertEqual(reply["status"], 200, reply)
        self.assertEqual(reply["content"], {"latitude": 48.8584})
        self.assertEqual(reply["req_id"], "in-1")

        seen = self.observer.wait_message(
            lambda m: m.topic == inbox and harness.reply_to("in-1")(m),
            what="the reply on the Response Topic")
        self.assertEqual(seen.correlation_data, b"corr-1")
        self.assertEqual(seen.content_type, "application/json")
        mirrored = self.observer.all(
            lambda m: m.topic == f"v1/res/{DEVICE}/get/gps/latitude")
        self.assertEqual(mirrored, [], "the reply must not also go to the mirrored topic")

    def test_response_topic_outside_the_device_prefix_gets_400_on_the_mirrored_topic(self):
        argv = self.rr_argv(f"v1/req/{DEVICE}/get/gps/latitude", "elsewhere/inbox",
                            '{"req_id":"out-1"}', correlation="corr-out", wait_s=30)
        rr = self.process(argv, harness.base_env(), "mosquitto_rr-outside")
        reply = self.observer.wait_message(
            lambda m: m.topic == f"v1/res/{DEVICE}/get/gps/latitude"
            and harness.reply_to("out-1")(m),
            what="the 400 on the mirrored topic").json()
        rr.stop()
        self.assertEqual(reply["status"], 400, reply)
        self.assertIsNone(reply["content"])
        self.assertIn("response topic", reply.get("error", "").lower(), reply)
        self.assertEqual(self.observer.all(lambda m: m.topic.startswith("elsewhere/")), [],
                         "homd must never publish outside v1/res/{id}/")
        self.assertEqual(self.http.count("GET", "/gps/latitude"), 0,
                         "a refused request must not reach the API")

    def test_reused_correlation_data_with_another_path_gets_its_own_reply(self):
        inbox = f"v1/res/{DEVICE}/rr/fixed-path"
        first = self.rr(f"v1/req/{DEVICE}/get/echo/first", inbox, '{"req_id":"p-1"}',
                        correlation="fixed")
        second = self.rr(f"v1/req/{DEVICE}/get/echo/second", inbox, '{"req_id":"p-2"}',
                         correlation="fixed")
        self.assertEqual(first["req_id"], "p-1")
        self.assertEqual(first["content"]["path"], "/echo/first")
        self.assertEqual(second["req_id"], "p-2",
                         f"the second request got another request's reply: {second}\n"
                         f"homd:\n{harness.tail(self.daemon.log(), 10)}")
        self.assertEqual(second["content"]["path"], "/echo/second", second)
        self.assertEqual(self.http.count("GET", "/echo/second"), 1)

    def test_reused_correlation_data_with_another_body_gets_its_own_reply(self):
        inbox = f"v1/res/{DEVICE}/rr/fixed-body"
        topic = f"v1/req/{DEVICE}/post/echo/same"
        first = self.rr(topic, inbox, '{"body":"apple","req_id":"b-1"}', correlation="fixed")
        second = self.rr(topic, inbox, '{"body":"pear","req_id":"b-2"}', correlation="fixed")
        self.assertEqual(first["content"]["body"], "apple")
        self.assertEqual(second["req_id"], "b-2",
                         f"the second request got another request's reply: {second}\n"
                         f"homd:\n{harness.tail(self.daemon.log(), 10)}")
        self.assertEqual(second["content"]["body"], "pear", second)
        self.assertEqual(self.http.count("POST", "/echo/same"), 2)

    def test_true_duplicate_is_answered_from_the_cache(self):
        inbox = f"v1/res/{DEVICE}/rr/dup"
        topic = f"v1/req/{DEVICE}/post/echo/dup"
        payload = '{"body":"once","req_id":"d-1"}'
        first = self.rr(topic, inbox, payload, correlation="dup-corr")
        second = self.rr(topic, inbox, payload, correlation="dup-corr")
        self.assertEqual(first, second)
        self.assertEqual(self.http.count("POST", "/echo/dup"), 1,
                         "a duplicate must be answered from the cache, not executed again")


if __name__ == "__main__":
    unittest.main(verbosity=2)
