// WorkQueue: capacity counts queued, running and held slots; close and idle.
#include "hom/work_queue.hpp"

#include <chrono>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

namespace {

using hom::Admission;
using Queue = hom::WorkQueue<std::unique_ptr<int>>;
using namespace std::chrono_literals;

std::unique_ptr<int> item(int v) { return std::make_unique<int>(v); }

TEST(WorkQueueTest, PopsInArrivalOrder) {
  Queue q(3);
  ASSERT_EQ(q.push(item(1)), Admission::kAccepted);
  ASSERT_EQ(q.push(item(2)), Admission::kAccepted);
  EXPECT_EQ(**q.pop(), 1);
  EXPECT_EQ(**q.pop(), 2);
}

TEST(WorkQueueTest, CapacityCountsQueuedRunningAndHeld) {
  Queue q(3);
  ASSERT_EQ(q.push(item(1)), Admission::kAccepted);
  auto running = q.pop();  // running: still holds its slot
  ASSERT_TRUE(running);
  ASSERT_EQ(q.push(item(2)), Admission::kAccepted);  // queued
  ASSERT_EQ(q.hold(), Admission::kAccepted);         // a parked duplicate
  const auto c = q.counts();
  EXPECT_EQ(c.queued, 1u);
  EXPECT_EQ(c.running, 1u);
  EXPECT_EQ(c.held, 1u);

  EXPECT_EQ(q.hold(), Admission::kFull);
  auto refused = item(3);
  EXPECT_EQ(q.push(std::move(refused)), Admission::kFull);
  ASSERT_TRUE(refused) << "a refused item is not moved from";
  EXPECT_EQ(*refused, 3);

  q.release();
  EXPECT_EQ(q.push(std::move(refused)), Admission::kAccepted);
  EXPECT_EQ(q.hold(), Admission::kFull);
  q.done();  // the running one finished
  EXPECT_EQ(q.hold(), Admission::kAccepted);
}

TEST(WorkQueueTest, ZeroQueueMaxStillRunsOnePerWorker) {
  Queue q(1);  // WORKERS=1, QUEUE_MAX=0
  EXPECT_EQ(q.push(item(1)), Admission::kAccepted);
  EXPECT_EQ(q.push(item(2)), Admission::kFull);
}

TEST(WorkQueueTest, CloseRefusesNewWorkAndHandsOutTheRest) {
  Queue q(4);
  ASSERT_EQ(q.push(item(1)), Admission::kAccepted);
  ASSERT_EQ(q.push(item(2)), Admission::kAccepted);
  q.close();
  EXPECT_EQ(q.push(item(3)), Admission::kClosed);
  EXPECT_EQ(q.hold(), Admission::kClosed);
  EXPECT_EQ(**q.pop(), 1);
  EXPECT_EQ(**q.pop(), 2);
  EXPECT_FALSE(q.pop());
  q.close();  // idempotent
  EXPECT_FALSE(q.pop());
}

TEST(WorkQueueTest, PopWaitsForPushOrClose) {
  Queue q(2);
  std::unique_ptr<int> got;
  bool ended = false;
  std::thread worker([&] {
    while (auto i = q.pop()) {
      got = std::move(*i);
      q.done();
    }
    ended = true;
  });
  ASSERT_EQ(q.push(item(7)), Admission::kAccepted);
  ASSERT_TRUE(q.wait_idle_for(20s));
  q.close();
  worker.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, 7);
  EXPECT_TRUE(ended);
}

TEST(WorkQueueTest, IdleOnlyWhenNothingQueuedRunningOrHeld) {
  Queue q(4);
  EXPECT_TRUE(q.wait_idle_for(0ms));
  ASSERT_EQ(q.hold(), Admission::kAccepted);
  EXPECT_FALSE(q.wait_idle_for(1ms));
  q.release();
  EXPECT_TRUE(q.wait_idle_for(0ms));

  ASSERT_EQ(q.push(item(1)), Admission::kAccepted);
  EXPECT_FALSE(q.wait_idle_for(1ms));
  ASSERT_TRUE(q.pop());
  EXPECT_FALSE(q.wait_idle_for(1ms));
  std::thread finisher([&] { q.done(); });
  EXPECT_TRUE(q.wait_idle_for(20s));
  finisher.join();
}

}  // namespace
