"""MQTT.js (the Node.js MQTT client, pinned in package-lock.json) as an MQTT 5 requester of
homd on Mosquitto.

Proves (SPEC §2 "MQTT 5"): a reply to a request with a Response Topic under
{start}/res/{id}/ arrives there with Content Type `application/json`, the request's
Correlation Data byte for byte (also bytes that are not UTF-8), and, when the request had a
Message Expiry Interval, one no larger than the request's; at QoS 1 and 2.
"""

import json
import subprocess
import unittest

import harness
from harness import InteropTest

DEVICE = "js-dev"


class MqttJsTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.node = harness.node_bin()
        self.broker = self.mosquitto()
        self.http = self.api()
        self.daemon = self.homd(self.broker.port, self.http.url, DEVICE)
        self.daemon.wait_connected()

    def request(self, path, payload, correlation_hex, expiry=None, qos=1, inbox="js/inbox"):
        opts = {"url": f"mqtt://127.0.0.1:{self.broker.port}",
                "topic": f"v1/req/{DEVICE}/{path}",
                "responseTopic": f"v1/res/{DEVICE}/{inbox}",
                "correlationHex": correlation_hex, "payload": payload, "qos": qos,
                "timeoutMs": 30000}
        if expiry is not None:
            opts["expiry"] = expiry
        done = subprocess.run(
            ["setpriv", "--pdeathsig", "KILL", "--", self.node,
             harness.node_script("mqttjs_request.js"), json.dumps(opts)],
            env=harness.base_env(), stdin=subprocess.DEVNULL, capture_output=True,
            timeout=60, check=False)
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        self.assertEqual(done.returncode, 0, f"MQTT.js: {err}{out}\nhomd:\n"
                                             f"{harness.tail(self.daemon.log(), 10)}")
        result = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(result["topic"], opts["responseTopic"])
        return result

    def test_reply_properties_with_an_expiry(self):
        for qos in (1, 2):
            with self.subTest(qos=qos):
                corr = f"c0ffee{qos:02x}"
                result = self.request("get/gps/latitude", json.dumps({"req_id": f"e{qos}"}),
                                      corr, expiry=30, qos=qos, inbox=f"js/exp-{qos}")
                reply = json.loads(result["payload"])
                self.assertEqual(reply["status"], 200, reply)
                self.assertEqual(reply["content"], {"latitude": 48.8584})
                self.assertEqual(reply["req_id"], f"e{qos}")
                props = result["properties"]
                self.assertEqual(props["contentType"], "application/json")
                self.assertEqual(props["correlationData"], corr)
                self.assertIsNotNone(props["messageExpiryInterval"],
                                     "a request with an expiry must get a reply with one")
                self.assertGreaterEqual(props["messageExpiryInterval"], 1)
                self.assertLessEqual(props["messageExpiryInterval"], 30)

    def test_reply_properties_without_an_expiry(self):
        corr = "00ff80fe"  # not UTF-8: Correlation Data is binary
        result = self.request("post/echo/js", json.dumps({"body": {"n": 1}, "req_id": "n1"}),
                              corr, qos=2, inbox="js/no-exp")
        reply = json.loads(result["payload"])
        self.assertEqual(reply["status"], 200, reply)
        self.assertEqual(reply["content"]["method"], "POST")
        self.assertEqual(json.loads(reply["content"]["body"]), {"n": 1})
        self.assertEqual(result["properties"]["contentType"], "application/json")
        self.assertEqual(result["properties"]["correlationData"], corr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
