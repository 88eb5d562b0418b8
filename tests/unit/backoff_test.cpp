// The reconnect back-off (hom/backoff.hpp): its windows, its jitter, and what it does for a
// fleet of 1 000 devices that lose their broker at the same instant.
#include "hom/backoff.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <vector>

namespace hom {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kConnectedLong = seconds(3600);

TEST(BackoffTest, FailuresAtStartDoubleTheWindowFromMinToMax) {
  Backoff backoff({}, 1);
  const std::vector<long> expected = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
  for (const long window : expected) {
    EXPECT_EQ(backoff.window().count(), window);
    const auto wait = backoff.failed();
    EXPECT_GE(wait.count(), 0);
    EXPECT_LT(wait.count(), window);
  }
  for (int i = 0; i < 100; ++i) backoff.failed();  // no overflow past the cap
  EXPECT_EQ(backoff.window(), seconds(60));
}

TEST(BackoffTest, TheSameSeedGivesTheSameWaits) {
  Backoff a({}, 42), b({}, 42), c({}, 43);
  std::vector<milliseconds> wa, wb, wc;
  for (int i = 0; i < 10; ++i) {
    wa.push_back(a.failed());
    wb.push_back(b.failed());
    wc.push_back(c.failed());
  }
  EXPECT_EQ(wa, wb);
  EXPECT_NE(wa, wc);
}

TEST(BackoffTest, FullJitterCoversTheWholeWindow) {
  Backoff backoff({}, 7);
  for (int i = 0; i < 6; ++i) backoff.failed();
  ASSERT_EQ(backoff.window(), seconds(60));
  long lowest = 60000, highest = 0, sum = 0;
  constexpr int kDraws = 10000;
  for (int i = 0; i < kDraws; ++i) {
    const long w = backoff.failed().count();
    lowest = std::min(lowest, w);
    highest = std::max(highest, w);
    sum += w;
  }
  EXPECT_LT(lowest, 600);     // not "half to all" (equal jitter): down to zero
  EXPECT_GT(highest, 59400);  // and up to the cap
  EXPECT_NEAR(sum / kDraws, 30000, 1500);
}

TEST(BackoffTest, TheFirstRetryAfterALossIsJitteredOverEightTimesMin) {
  Backoff backoff({}, 3);
  EXPECT_EQ(backoff.window(), seconds(1));
  const auto wait = backoff.lost(kConnectedLong);
  EXPECT_LT(wait, seconds(8));
  EXPECT_EQ(backoff.window(), seconds(16));  // a failed retry after that: 16 s
}

TEST(BackoffTest, AConnectionThatStoodThirtySecondsResetsTheWindows) {
  Backoff backoff({}, 5);
  for (int i = 0; i < 10; ++i) backoff.failed();
  ASSERT_EQ(backoff.window(), seconds(60));
  backoff.lost(seconds(30));
  EXPECT_EQ(backoff.window(), seconds(16));  // drawn from 8 s, the next from 16 s
}

TEST(BackoffTest, AFlappingBrokerKeepsTheWindowsGrowing) {
  Backoff backoff({}, 9);
  backoff.lost(kConnectedLong);  // 8 s
  EXPECT_EQ(backoff.window(), seconds(16));
  backoff.lost(seconds(29));  // connected, lost again within 30 s: 16 s
  EXPECT_EQ(backoff.window(), seconds(32));
  backoff.lost(seconds(5));
  backoff.lost(seconds(5));
  EXPECT_EQ(backoff.window(), seconds(60));
  // A short connection after failures at start still waits at least the loss window.
  Backoff fresh({}, 10);
  fresh.failed();
  fresh.lost(seconds(1));
  EXPECT_EQ(fresh.window(), seconds(16));
}

TEST(BackoffTest, ConfiguredWindowsAreKept) {
  Backoff backoff({milliseconds(100), milliseconds(1000), seconds(30)}, 11);
  EXPECT_LT(backoff.lost(kConnectedLong), milliseconds(800));
  EXPECT_LT(backoff.failed(), milliseconds(1000));
  EXPECT_EQ(backoff.window(), milliseconds(1000));
  Backoff odd({milliseconds(0), milliseconds(0), seconds(30)}, 12);  // clamped to 1 ms
  EXPECT_EQ(odd.failed(), milliseconds(0));
}

// A fleet of 1 000 devices loses its broker at t = 0; the broker is back at t = outage.
// Connect attempts take no time (refused while it is down). SPEC §9: no more than a quarter
// of the fleet reconnects in any one second, and every device is back within 90 s.
struct FleetOutcome {
  int peak_per_second = 0;
  milliseconds last{0};
};

FleetOutcome reconnect_fleet(milliseconds outage, int devices) {
  std::map<long, int> per_second;
  FleetOutcome out;
  for (int d = 0; d < devices; ++d) {
    Backoff backoff({}, 1000 + static_cast<std::uint64_t>(d));
    milliseconds t = backoff.lost(kConnectedLong);
    while (t < outage) t += backoff.failed();
    const milliseconds back = t - outage;
    ++per_second[static_cast<long>(back.count() / 1000)];
    out.last = std::max(out.last, back);
  }
  for (const auto& [second, n] : per_second) out.peak_per_second = std::max(out.peak_per_second, n);
  return out;
}

TEST(BackoffTest, AFleetComesBackSpreadOutAndWithinNinetySeconds) {
  constexpr int kDevices = 1000;
  const std::vector<milliseconds> outages = {milliseconds(300), seconds(1),  seconds(2),
                                             seconds(5),        seconds(10), seconds(30),
                                             seconds(120),      seconds(600)};
  for (const milliseconds outage : outages) {
    const auto o = reconnect_fleet(outage, kDevices);
    SCOPED_TRACE("outage " + std::to_string(outage.count()) + " ms");
    EXPECT_LE(o.peak_per_second, kDevices / 4);
    EXPECT_LE(o.last, seconds(60));  // the cap: well within 90 s
  }
}

}  // namespace
}  // namespace hom
