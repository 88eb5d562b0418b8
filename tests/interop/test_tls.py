"""TLS on Mosquitto with certificates made by the test (openssl): the right CA, a wrong CA, a
certificate for another host name.

Proves (SPEC §3 MQTT_TLS/MQTT_CA_FILE, §5.1 "TLS errors"):
- with the right CA, homd connects and hom gets its reply, both verifying the broker;
- with a wrong CA, or a broker certificate for another name, neither connects, and homd's
  log line about the failed connect and hom's one-line error both NAME the reason (a CA
  word for the CA, a name word for the name), not only "TCP/TLS connect failure".
"""

import re
import unittest

import harness
from harness import InteropTest

CA_REASON = re.compile(
    r"unknown ca|certificate verify failed|unable to get local issuer|self[- ]signed|"
    r"untrusted|not trusted", re.IGNORECASE)
FAILED_CONNECT = re.compile(r"connect.*(fail|cannot|error|refused)", re.IGNORECASE)
NAME_REASON = re.compile(
    r"name mismatch|hostname|host name|ip address mismatch|does not match", re.IGNORECASE)


class TlsTest(InteropTest):
    def setUp(self):
        super().setUp()
        d = self.tmp.path
        self.ca = harness.make_ca(d, "ca-good")
        self.other_ca = harness.make_ca(d, "ca-other")
        good = harness.make_server_cert(d, "broker", self.ca, "IP:127.0.0.1,DNS:localhost")
        self.broker = self.mosquitto(tls=(self.ca[0], *good))
        self.http = self.api()

    def env(self, ca_file):
        return {"MQTT_TLS": "on", "MQTT_CA_FILE": ca_file}

    def hom(self, port, device, ca_file):
        return harness.run_hom(["get", device, "gps/latitude", "--timeout", "10s"],
                               harness.hom_env(port, **self.env(ca_file)))

    def check_refused(self, port, ca_file, device, reason, what):
        daemon = self.homd(port, self.http.url, device, **self.env(ca_file))
        # Two failed attempts (the second after a back-off): whatever homd says, it has said.
        harness.wait_until(
            lambda: len(FAILED_CONNECT.findall(daemon.log())) >= 2 or not daemon.process.running(),
            what=f"homd to fail to connect twice:\n{daemon.log()}")
        text = daemon.log()
        self.assertNotIn("connected to", text)
        lines = [line for line in text.splitlines()
                 if FAILED_CONNECT.search(line) and reason.search(line)]
        self.assertTrue(lines, f"{what}: no line of homd's log says why the connect failed "
                               f"(expected {reason.pattern!r} in it):\n{harness.tail(text)}")

        result = self.hom(port, device, ca_file)
        self.assertEqual(result.returncode, 7, result)
        err = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(err), 1, f"hom must fail with one line: {result}")
        self.assertRegex(err[0], reason, f"{what}: hom's error does not say why")

    def test_good_ca(self):
        daemon = self.homd(self.broker.tls_port, self.http.url, "tls-good", **self.env(self.ca[0]))
        daemon.wait_connected()
        self.assertIn("ssl://127.0.0.1", daemon.log())
        result = self.hom(self.broker.tls_port, "tls-good", self.ca[0])
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout.strip(), '{"latitude":48.8584}')

    def test_wrong_ca(self):
        self.check_refused(self.broker.tls_port, self.other_ca[0], "tls-wrong-ca", CA_REASON,
                           "wrong CA")

    def test_wrong_host_name(self):
        wrong = harness.make_server_cert(self.tmp.path, "broker-other-name", self.ca,
                                         "DNS:another-host.invalid")
        broker = self.mosquitto(tls=(self.ca[0], *wrong))
        self.check_refused(broker.tls_port, self.ca[0], "tls-wrong-name", NAME_REASON,
                           "certificate for another name")


if __name__ == "__main__":
    unittest.main(verbosity=2)
