// Deterministic tests of every batching rule: manual mode (no worker threads) + a fake clock,
// except the worker-limit test, which uses real threads and latches (no timing).
#include "server/batcher.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eqsim {
namespace {

using ::testing::ElementsAre;

struct Log {
  absl::Mutex mu;
  std::vector<std::vector<std::string>> batches;  // ids per processed batch
  std::vector<std::pair<std::string, absl::StatusCode>> drops;
};

class TestTask : public BatchTask {
 public:
  TestTask(std::string id, int n, Log* log) : id(std::move(id)), log(log) { size = n; }
  void Drop(const absl::Status& s) override {
    absl::MutexLock l(&log->mu);
    log->drops.emplace_back(id, s.code());
  }
  std::string id;
  Log* log;
};

std::unique_ptr<BatchTask> T(const std::string& id, int n, Log* log,
                             Priority p = Priority::kHigh) {
  auto t = std::make_unique<TestTask>(id, n, log);
  t->priority = p;
  return t;
}

std::vector<std::unique_ptr<BatchTask>> One(std::unique_ptr<BatchTask> t) {
  std::vector<std::unique_ptr<BatchTask>> v;
  v.push_back(std::move(t));
  return v;
}

BatchProcessFn Recorder(Log* log) {
  return [log](std::vector<std::unique_ptr<BatchTask>> batch) {
    std::vector<std::string> ids;
    for (auto& t : batch) ids.push_back(static_cast<TestTask*>(t.get())->id);
    absl::MutexLock l(&log->mu);
    log->batches.push_back(ids);
  };
}

class BatcherTest : public ::testing::Test {
 protected:
  BatcherTest() {
    BatcherOptions o;
    o.num_threads = 0;
    o.clock = clock_;
    o.on_depth = [this](const std::string& q, int d) { depth_[q] = d; };
    batcher_ = std::make_unique<Batcher>(o);
  }
  void AddQueue(const std::string& key, int max_batch, int delay_us, int max_queue) {
    BatchQueueOptions q;
    q.max_batch_size = max_batch;
    q.max_queue_delay = absl::Microseconds(delay_us);
    q.max_queue_size = max_queue;
    ASSERT_TRUE(batcher_->AddQueue(key, q, Recorder(&log_)).ok());
  }
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  Log log_;
  std::map<std::string, int> depth_;
  std::unique_ptr<Batcher> batcher_;
};

// The depth observer (the queue-depth gauge) must see changes in the order they happened, also
// when many threads enqueue at once; otherwise the gauge can stay at a stale value.
TEST(BatcherDepthObserver, SeesConcurrentEnqueuesInOrder) {
  absl::Mutex mu;
  std::vector<int> seen;
  Log log;  // outlives the batcher, whose destructor runs what is still queued
  BatcherOptions o;
  o.num_threads = 0;
  o.clock = std::make_shared<FakeClock>();
  o.on_depth = [&](const std::string&, int d) {
    absl::MutexLock l(&mu);
    seen.push_back(d);
  };
  Batcher batcher(o);
  BatchQueueOptions q;
  q.max_batch_size = 1000;
  q.max_queue_delay = absl::Hours(1);
  q.max_queue_size = 1000;
  ASSERT_TRUE(batcher.AddQueue("q", q, Recorder(&log)).ok());
  constexpr int kThreads = 8, kEach = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        ASSERT_TRUE(batcher.Enqueue("q", One(T(absl::StrCat(t, "/", i), 1, &log))).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(seen.size(), static_cast<size_t>(kThreads * kEach));
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], static_cast<int>(i) + 1) << i;
  EXPECT_EQ(batcher.QueueDepth("q"), kThreads * kEach);
}

TEST(SplitIntoChunks, CoversEveryItemOnce) {
  EXPECT_THAT(SplitIntoChunks(70, 32),
              ElementsAre(std::make_pair(0, 32), std::make_pair(32, 64), std::make_pair(64, 70)));
  EXPECT_THAT(SplitIntoChunks(32, 32), ElementsAre(std::make_pair(0, 32)));
  EXPECT_TRUE(SplitIntoChunks(0, 8).empty());
}

TEST_F(BatcherTest, PartialBatchWaitsExactlyMaxQueueDelay) {
  AddQueue("m/image", 4, 1000, 16);
  ASSERT_TRUE(batcher_->Enqueue("m/image", One(T("a", 1, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  clock_->Advance(absl::Microseconds(999));
  ASSERT_TRUE(batcher_->Enqueue("m/image", One(T("b", 2, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);  // 3 < 4 items, oldest waited 999us
  EXPECT_EQ(batcher_->QueueDepth("m/image"), 3);
  EXPECT_EQ(depth_["m/image"], 3);
  clock_->Advance(absl::Microseconds(1));
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("a", "b")));
  EXPECT_EQ(batcher_->QueueDepth("m/image"), 0);
  EXPECT_EQ(depth_["m/image"], 0);
}

TEST_F(BatcherTest, FullBatchRunsWithoutWaiting) {
  AddQueue("m/text", 4, 1000000, 16);
  ASSERT_TRUE(batcher_->Enqueue("m/text", One(T("a", 3, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  ASSERT_TRUE(batcher_->Enqueue("m/text", One(T("b", 1, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);  // no time has passed
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("a", "b")));
}

TEST_F(BatcherTest, BatchNeverExceedsMaxBatchSizeAndKeepsFifo) {
  AddQueue("q", 4, 0, 64);
  std::vector<std::unique_ptr<BatchTask>> v;
  v.push_back(T("a", 3, &log_));
  v.push_back(T("b", 2, &log_));
  v.push_back(T("c", 1, &log_));
  v.push_back(T("d", 4, &log_));
  ASSERT_TRUE(batcher_->Enqueue("q", std::move(v)).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 3);
  EXPECT_THAT(log_.batches,
              ElementsAre(ElementsAre("a"), ElementsAre("b", "c"), ElementsAre("d")));
}

TEST_F(BatcherTest, OversizedTaskIsRejectedSplitChunksAreAccepted) {
  AddQueue("q", 4, 0, 64);
  auto st = batcher_->Enqueue("q", One(T("big", 5, &log_)));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  std::vector<std::unique_ptr<BatchTask>> v;
  for (auto [b, e] : SplitIntoChunks(10, 4)) v.push_back(T(std::to_string(b), e - b, &log_));
  ASSERT_TRUE(batcher_->Enqueue("q", std::move(v)).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 3);
  EXPECT_THAT(log_.batches,
              ElementsAre(ElementsAre("0"), ElementsAre("4"), ElementsAre("8")));
}

TEST_F(BatcherTest, FullQueueRefusesAtOnceAndAllOrNothing) {
  AddQueue("q", 4, 1000, 8);
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("a", 3, &log_))).ok());
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("b", 3, &log_))).ok());
  std::vector<std::unique_ptr<BatchTask>> v;
  v.push_back(T("c", 1, &log_));
  v.push_back(T("d", 2, &log_));  // 3 + 3 + 1 + 2 = 9 > 8: none of c, d is queued
  auto st = batcher_->Enqueue("q", std::move(v));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr("max_queue_size 8"));
  EXPECT_EQ(batcher_->QueueDepth("q"), 6);
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("e", 2, &log_))).ok());  // exactly fits
  EXPECT_EQ(batcher_->QueueDepth("q"), 8);
  EXPECT_TRUE(log_.drops.empty());
}

TEST_F(BatcherTest, DeadlinePassedInQueueIsDroppedBeforeCompute) {
  AddQueue("q", 4, 1000, 16);
  auto a = T("a", 1, &log_);
  a->deadline = clock_->Now() + absl::Microseconds(500);
  ASSERT_TRUE(batcher_->Enqueue("q", One(std::move(a))).ok());
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("b", 1, &log_))).ok());
  clock_->Advance(absl::Microseconds(499));
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  EXPECT_TRUE(log_.drops.empty());
  clock_->Advance(absl::Microseconds(1));
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);  // b is not due yet, a has expired
  ASSERT_EQ(log_.drops.size(), 1u);
  EXPECT_EQ(log_.drops[0].first, "a");
  EXPECT_EQ(log_.drops[0].second, absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(batcher_->QueueDepth("q"), 1);
  clock_->Advance(absl::Microseconds(500));
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("b")));
}

// gRPC cancels a call when its deadline passes; whichever the batcher sees first, a task
// past its deadline ends as DEADLINE_EXCEEDED, one cancelled before it as CANCELLED.
TEST_F(BatcherTest, CancelledAfterItsDeadlineCountsAsDeadlineExceeded) {
  AddQueue("q", 4, 1000000, 16);
  auto late = T("late", 1, &log_);
  auto early = T("early", 1, &log_);
  late->deadline = early->deadline = clock_->Now() + absl::Milliseconds(300);
  late->cancel = std::make_shared<CancelToken>();
  early->cancel = std::make_shared<CancelToken>();
  auto late_token = late->cancel, early_token = early->cancel;
  ASSERT_TRUE(batcher_->Enqueue("q", One(std::move(late))).ok());
  ASSERT_TRUE(batcher_->Enqueue("q", One(std::move(early))).ok());
  clock_->Advance(absl::Milliseconds(100));
  early_token->Cancel();
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  clock_->Advance(absl::Milliseconds(200));
  late_token->Cancel();
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  EXPECT_THAT(log_.drops,
              ElementsAre(std::make_pair(std::string("early"), absl::StatusCode::kCancelled),
                          std::make_pair(std::string("late"), absl::StatusCode::kDeadlineExceeded)));
  EXPECT_TRUE(log_.batches.empty());
}

TEST_F(BatcherTest, CancelledTaskLeavesQueueAndFreesSpace) {
  AddQueue("q", 4, 1000, 4);
  auto token = std::make_shared<CancelToken>();
  auto a = T("a", 3, &log_);
  a->cancel = token;
  ASSERT_TRUE(batcher_->Enqueue("q", One(std::move(a))).ok());
  EXPECT_EQ(batcher_->Enqueue("q", One(T("x", 2, &log_))).code(),
            absl::StatusCode::kResourceExhausted);
  token->Cancel();
  // The next enqueue purges the cancelled task first, so 2 items now fit.
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("b", 2, &log_))).ok());
  ASSERT_EQ(log_.drops.size(), 1u);
  EXPECT_EQ(log_.drops[0], std::make_pair(std::string("a"), absl::StatusCode::kCancelled));
  clock_->Advance(absl::Milliseconds(1));
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("b")));
}

TEST_F(BatcherTest, HighPriorityGoesFirstAndLowFillsTheBatch) {
  AddQueue("q", 4, 1000, 64);
  std::vector<std::unique_ptr<BatchTask>> low;
  low.push_back(T("low0", 2, &log_, Priority::kLow));
  low.push_back(T("low1", 2, &log_, Priority::kLow));
  low.push_back(T("low2", 1, &log_, Priority::kLow));
  ASSERT_TRUE(batcher_->Enqueue("q", std::move(low)).ok());
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("high", 1, &log_))).ok());
  // 6 items >= 4: ready now. The later HIGH task leads, LOW tasks fill what fits.
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);  // 3 LOW items left: not full, not due
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("high", "low0")));
  clock_->Advance(absl::Milliseconds(1));
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);
  EXPECT_THAT(log_.batches[1], ElementsAre("low1", "low2"));
}

TEST_F(BatcherTest, QueueWithHighWorkIsServedBeforeOlderLowOnlyQueue) {
  AddQueue("eval", 2, 0, 64);
  AddQueue("online", 2, 0, 64);
  ASSERT_TRUE(batcher_->Enqueue("eval", One(T("e", 2, &log_, Priority::kLow))).ok());
  clock_->Advance(absl::Microseconds(10));
  ASSERT_TRUE(batcher_->Enqueue("online", One(T("o", 2, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 2);
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("o"), ElementsAre("e")));
}

TEST_F(BatcherTest, QueuesAreNeverMixed) {
  AddQueue("m/image", 8, 100, 64);
  AddQueue("m/text", 8, 100, 64);
  ASSERT_TRUE(batcher_->Enqueue("m/image", One(T("i", 1, &log_))).ok());
  ASSERT_TRUE(batcher_->Enqueue("m/text", One(T("t", 1, &log_))).ok());
  clock_->Advance(absl::Microseconds(100));
  EXPECT_EQ(batcher_->RunReadyBatches(), 2);
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("i"), ElementsAre("t")));
}

TEST_F(BatcherTest, RemovedQueueRunsWhatIsQueuedThenRefuses) {
  AddQueue("m/1", 8, 1000000, 64);
  ASSERT_TRUE(batcher_->Enqueue("m/1", One(T("a", 1, &log_))).ok());
  batcher_->RemoveQueue("m/1");
  EXPECT_FALSE(batcher_->HasQueue("m/1"));
  EXPECT_EQ(batcher_->Enqueue("m/1", One(T("b", 1, &log_))).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);  // flushed without waiting for the delay
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("a")));
  // Released: the key can be used again.
  AddQueue("m/1", 8, 0, 64);
}

TEST_F(BatcherTest, UnknownQueueAndBadOptions) {
  EXPECT_EQ(batcher_->Enqueue("nope", One(T("a", 1, &log_))).code(),
            absl::StatusCode::kUnavailable);
  BatchQueueOptions bad;
  bad.max_batch_size = 0;
  EXPECT_EQ(batcher_->AddQueue("x", bad, Recorder(&log_)).code(),
            absl::StatusCode::kInvalidArgument);
  bad.max_batch_size = 8;
  bad.max_queue_size = 0;
  EXPECT_EQ(batcher_->AddQueue("x", bad, Recorder(&log_)).code(),
            absl::StatusCode::kInvalidArgument);
  AddQueue("y", 1, 0, 1);
  BatchQueueOptions ok;
  EXPECT_EQ(batcher_->AddQueue("y", ok, Recorder(&log_)).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(BatcherTest, ShutdownRunsQueuedWorkAndRefusesNew) {
  AddQueue("q", 8, 1000000, 64);
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("a", 1, &log_))).ok());
  EXPECT_TRUE(batcher_->Shutdown(absl::Seconds(1)));
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("a")));
  EXPECT_EQ(batcher_->Enqueue("q", One(T("b", 1, &log_))).code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(BatcherTest, FlushingRunsPartialBatchesAtOnceAndStillAccepts) {
  AddQueue("q", 8, 1000000, 64);
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("a", 1, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  batcher_->StartFlushing();
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);
  ASSERT_TRUE(batcher_->Enqueue("q", One(T("b", 1, &log_))).ok());
  EXPECT_EQ(batcher_->RunReadyBatches(), 1);
  EXPECT_THAT(log_.batches, ElementsAre(ElementsAre("a"), ElementsAre("b")));
}

// Real threads: two workers, at most one of them on LOW-only work. With one LOW batch
// blocked in compute, a second ready LOW batch must wait, while a HIGH task is served.
TEST(BatcherThreads, LowPriorityWorkLeavesAWorkerForOnlineRequests) {
  BatcherOptions o;
  o.num_threads = 2;
  o.max_low_priority_workers = 1;
  Batcher b(o);
  Log log;
  absl::Notification first_started, release_first, high_done;
  BatchQueueOptions q;
  q.max_batch_size = 1;
  q.max_queue_delay = absl::ZeroDuration();
  q.max_queue_size = 16;
  ASSERT_TRUE(b.AddQueue("eval", q,
                         [&](std::vector<std::unique_ptr<BatchTask>> batch) {
                           auto id = static_cast<TestTask*>(batch[0].get())->id;
                           {
                             absl::MutexLock l(&log.mu);
                             log.batches.push_back({id});
                           }
                           if (id == "low0") {
                             first_started.Notify();
                             release_first.WaitForNotification();
                           }
                         })
                  .ok());
  ASSERT_TRUE(b.AddQueue("online", q,
                         [&](std::vector<std::unique_ptr<BatchTask>> batch) {
                           {
                             absl::MutexLock l(&log.mu);
                             log.batches.push_back({"high"});
                           }
                           high_done.Notify();
                         })
                  .ok());
  ASSERT_TRUE(b.Enqueue("eval", One(T("low0", 1, &log, Priority::kLow))).ok());
  first_started.WaitForNotification();
  ASSERT_TRUE(b.Enqueue("eval", One(T("low1", 1, &log, Priority::kLow))).ok());
  ASSERT_TRUE(b.Enqueue("online", One(T("high", 1, &log))).ok());
  high_done.WaitForNotification();
  {
    absl::MutexLock l(&log.mu);
    // low1 was ready before high arrived but may not run while low0 holds the LOW slot.
    EXPECT_THAT(log.batches, ElementsAre(ElementsAre("low0"), ElementsAre("high")));
  }
  release_first.Notify();
  EXPECT_TRUE(b.Shutdown(absl::Seconds(30)));
  absl::MutexLock l(&log.mu);
  EXPECT_EQ(log.batches.size(), 3u);
  EXPECT_THAT(log.batches[2], ElementsAre("low1"));
}

}  // namespace
}  // namespace eqsim
