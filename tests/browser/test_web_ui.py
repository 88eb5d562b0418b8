"""The demo device's web UI in a real browser, through the whole chain (SPEC §6):

  Chromium ──HTTP──> hom-gateway (host routing) ──MQTT──> Mosquitto ──> homd ──HTTP──> hom-demo-api

Debian's headless Chromium, driven by playwright-core (browser_check.js; pinned in
package-lock.json, installed by scripts/deps.sh with `npm ci`), opens
http://itsme.localhost:PORT/ (Chromium resolves *.localhost to loopback). The page's absolute
links (/app.css, /app.js, /logo.png) and its fetch() calls (/gps/latitude, /status, a POST to
/food/dessert) all reach the device through the gateway. The test fails on any failed request,
any status >= 400, any script error, a logo that did not decode, or data that never rendered.

Everything runs on 127.0.0.1 on ports chosen at run time, as children stopped by their PID
(tests/interop/harness.py). The screenshot is saved in the test's temporary directory
(kept with HOM_TEST_KEEP=1) and copied to $HOM_SCREENSHOT when that is set.
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "interop"))

import harness  # noqa: E402 - tests/interop/harness.py, found through the path above
from harness import InteropTest  # noqa: E402

DEVICE = "itsme"
HOST_SUFFIX = ".localhost"
# Starting Chromium, loading the page and every asset over MQTT on a loaded 2-core machine.
BROWSER_WAIT_S = 90


def node_bin():
    if not os.path.isfile(os.path.join(HERE, "node_modules", ".package-lock.json")):
        raise AssertionError("tests/browser/node_modules is missing: run scripts/deps.sh "
                             "(npm ci --prefix tests/browser)")
    return harness.binary("NODE_BIN", "node")


def chromium_bin():
    path = os.environ.get("CHROMIUM_BIN") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: run scripts/deps.sh (Debian's chromium)")
    return path


class Gateway:
    """hom-gateway in host routing mode, without tokens, on a free loopback port."""

    def __init__(self, directory, broker_port):
        for _ in range(5):
            self.port = harness.free_port()
            env = harness.base_env(
                MQTT_HOST="127.0.0.1", MQTT_PORT=broker_port, MQTT_TLS="off",
                MQTT_TOPIC_START="v1", GATEWAY_LISTEN=f"127.0.0.1:{self.port}",
                GATEWAY_ROUTE="host", GATEWAY_HOST_SUFFIX=HOST_SUFFIX, GATEWAY_AUTH="none",
                GATEWAY_TIMEOUT_MS="20000", LOG_LEVEL="info")
            self.process = harness.Process(
                [harness.binary("HOM_GATEWAY_BIN", "hom-gateway")], env,
                os.path.join(directory, f"gateway-{self.port}.log"))
            try:
                harness.wait_until(
                    lambda: not self.process.running() or self.get("/_hom/health")[0] == 200,
                    what="hom-gateway's /_hom/health to answer 200")
            except AssertionError:
                pass
            if self.process.running() and self.get("/_hom/health")[0] == 200:
                return
            self.process.kill9()
        raise AssertionError(f"hom-gateway did not start:\n{harness.tail(self.process.log())}")

    def host(self, device=DEVICE):
        return f"{device}{HOST_SUFFIX}:{self.port}"

    def url(self, path="/", device=DEVICE):
        return f"http://{self.host(device)}{path}"

    def get(self, path, host=None, headers=None):
        """(status, body) of one GET to the gateway, (None, b"") when it does not answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{self.port}",
                                               **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return None, b""
        finally:
            conn.close()

    def log(self):
        return self.process.log()

    def cleanup(self):
        self.process.stop()


class WebUiTest(InteropTest):
    def setUp(self):
        super().setUp()
        self.node = node_bin()
        self.chromium = chromium_bin()
        broker = self.mosquitto()
        self.demo = harness.DemoApi(self.tmp.path)
        self.addCleanup(self.demo.cleanup)
        self.homd(broker.port, self.demo.url, DEVICE).wait_connected()
        self.gateway = Gateway(self.tmp.path, broker.port)
        self.addCleanup(self.gateway.cleanup)
        # Ready when a request reaches the device: homd has subscribed, not only connected.
        harness.wait_until(
            lambda: self.gateway.get("/status", self.gateway.host(),
                                     {"Hom-Timeout": "2s"})[0] == 200,
            what="GET /status through the gateway to answer 200")

    def direct(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.demo.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def test_assets_come_through_byte_for_byte(self):
        for path in ("/", "/app.css", "/app.js", "/logo.png"):
            with self.subTest(path=path):
                status, body = self.gateway.get(path, self.gateway.host())
                self.assertEqual(status, 200, self.gateway.log())
                self.assertEqual(body, self.direct(path)[1])
        status, png = self.gateway.get("/logo.png", self.gateway.host())
        self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"))
        self.assertGreater(len(png), 100_000, "the logo is a realistic asset, not a pixel")

    def test_the_page_renders_the_device_data_in_chromium(self):
        screenshot = self.tmp.file("web-ui.png")
        opts = {"url": self.gateway.url("/"), "chromium": self.chromium,
                "profile": self.tmp.file("chromium-profile"), "screenshot": screenshot,
                "timeoutMs": BROWSER_WAIT_S * 1000}
        home = self.tmp.file("home")
        os.makedirs(home)
        env = harness.base_env(HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home)
        try:
            done = subprocess.run(
                ["setpriv", "--pdeathsig", "KILL", "--", self.node,
                 os.path.join(HERE, "browser_check.js"), json.dumps(opts)],
                env=env, cwd=HERE, stdin=subprocess.DEVNULL, capture_output=True,
                timeout=BROWSER_WAIT_S + 60, check=False)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"browser_check.js did not finish: {e.stderr!r}") from e
        out = done.stdout.decode("utf-8", "replace").strip()
        err = done.stderr.decode("utf-8", "replace")
        context = (f"\nbrowser_check.js exit {done.returncode}\nstdout: {out}\nstderr: {err}"
                   f"\nhom-gateway:\n{harness.tail(self.gateway.log(), 20)}")
        self.assertTrue(out, context)
        report = json.loads(out.splitlines()[-1])
        harness.log("requests seen by Chromium:\n  " + "\n  ".join(report.get("requests", [])))

        self.assertEqual(report["errors"], [], context)
        self.assertEqual(report["failures"], [], context)
        self.assertEqual(report["latitude"], "48.8584")
        self.assertEqual(report["service"], "hom-demo-api")
        self.assertEqual(report["status"], "ok")
        self.assertEqual(report["dessert"], "dessert tiramisu created")
        self.assertEqual(report["error"], "")
        self.assertEqual(report["origin"], self.gateway.host())
        self.assertTrue(report["stylesheetApplied"], "/app.css was not applied")
        self.assertTrue(report["logoComplete"])
        self.assertGreater(report["logoWidth"], 0, "/logo.png did not decode")
        self.assertEqual((report["logoWidth"], report["logoHeight"]), (256, 256))

        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        harness.log(f"rendered in {report['renderedMs']} ms; screenshot: {screenshot}")
        target = os.environ.get("HOM_SCREENSHOT")
        if target:
            shutil.copyfile(screenshot, target)
            harness.log(f"screenshot copied to {target}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
