// Dynamic batching: requests for the same model + modality wait briefly in a queue so that
// one encoder call serves many of them. Modelled on TensorFlow Serving's shared batch
// scheduler: many queues, one shared pool of worker threads.
//
// Rules (each one has a fake-clock test in tests/server/batcher_test.cc):
//  * A queue's batch runs as soon as it holds max_batch_size items, or when its oldest task
//    has waited max_queue_delay, whichever is first.
//  * A task is at most max_batch_size items; callers split larger requests with
//    SplitIntoChunks() and enqueue the chunks together. Enqueue is all-or-nothing: if the
//    items do not fit in max_queue_size, nothing is queued and RESOURCE_EXHAUSTED is returned
//    at once (no waiting).
//  * A task whose deadline passes while it waits is dropped before compute
//    (DEADLINE_EXCEEDED); a task whose CancelToken is set is dropped (CANCELLED). Dropped
//    tasks free their queue space immediately and never reach the process function.
//  * Priorities: a batch takes HIGH tasks first (FIFO), then fills up with LOW tasks. Among
//    queues that are ready, one with HIGH work goes first. At most
//    max_low_priority_workers workers run batches made only of LOW work, so that online
//    (HIGH) requests always find a free worker while evaluation jobs (LOW) run.
//  * Tasks of different queues are never mixed in one batch.
//  * RemoveQueue() refuses new tasks; queued tasks still run, then the queue (and its process
//    function, with whatever model it holds) is released.
//  * Shutdown(): refuses new tasks, runs what is queued (ignoring max_queue_delay) until the
//    timeout, then drops the rest with UNAVAILABLE.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"

namespace eqsim {

enum class Priority { kHigh = 0, kLow = 1 };

// Set by the transport when the caller goes away; checked by the batcher before compute.
// A token with a parent is also cancelled when the parent is (a request inside a job).
struct CancelToken {
  std::atomic<bool> cancelled{false};
  std::shared_ptr<const CancelToken> parent;
  bool IsCancelled() const {
    return cancelled.load(std::memory_order_relaxed) || (parent && parent->IsCancelled());
  }
  void Cancel() { cancelled.store(true, std::memory_order_relaxed); }
};

// One unit of queued work: a request, or a chunk of one. Subclass it to carry the payload.
class BatchTask {
 public:
  virtual ~BatchTask() = default;

  int size = 1;  // items, 1..max_batch_size
  Priority priority = Priority::kHigh;
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<CancelToken> cancel;  // optional
  absl::Time enqueue_time;              // set by Batcher::Enqueue

  // Called exactly once, outside the batcher's lock, when the batcher drops the task instead
  // of handing it to the process function (deadline, cancel, queue removed, shutdown).
  virtual void Drop(const absl::Status& status) = 0;
};

struct BatchQueueOptions {
  // Largest batch handed to the process function, in items.
  int max_batch_size = 32;
  // How long the oldest queued task may wait for its batch to fill.
  absl::Duration max_queue_delay = absl::Microseconds(2000);
  // Items that may wait in the queue, all priorities together. May be below max_batch_size
  // (batches then never fill and run after max_queue_delay).
  int max_queue_size = 1024;
};

struct BatcherOptions {
  // Worker threads shared by all queues. 0 = none: the owner calls RunReadyBatches() (tests).
  int num_threads = 2;
  // Workers that may run LOW-only batches at the same time (0 = no limit).
  int max_low_priority_workers = 1;
  std::shared_ptr<Clock> clock;  // null = real clock
  // Observer of queue depth changes (items), e.g. for a gauge. Called with the batcher's lock
  // held, in the order the changes happened: keep it cheap and never call back into the
  // Batcher from it.
  std::function<void(const std::string& queue, int depth)> on_depth;
};

// Receives a batch (1..max_batch_size items over one or more tasks, HIGH tasks first) and
// must complete every task. Called on a worker thread without the batcher's lock.
using BatchProcessFn = std::function<void(std::vector<std::unique_ptr<BatchTask>> batch)>;

// [begin, end) item ranges of at most `max` items covering n items.
std::vector<std::pair<int, int>> SplitIntoChunks(int n, int max);

class Batcher {
 public:
  explicit Batcher(BatcherOptions options);
  ~Batcher();  // Shutdown(0)
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // ALREADY_EXISTS if the key is taken, INVALID_ARGUMENT for bad options.
  absl::Status AddQueue(const std::string& key, BatchQueueOptions options, BatchProcessFn fn);
  // New tasks are refused; queued ones still run; then the queue is released.
  void RemoveQueue(const std::string& key);
  bool HasQueue(const std::string& key) const;

  // All-or-nothing. UNAVAILABLE if there is no such queue or it is being removed / the batcher
  // is shutting down; RESOURCE_EXHAUSTED if the items do not fit; INVALID_ARGUMENT if a task
  // is empty or larger than max_batch_size. On error the tasks are NOT dropped (they are
  // destroyed without Drop): the caller reports the returned status.
  absl::Status Enqueue(const std::string& key, std::vector<std::unique_ptr<BatchTask>> tasks);

  // Wakes the workers, e.g. after a CancelToken was set, so the task leaves the queue now.
  void Notify();

  // Manual mode (num_threads = 0): drops expired / cancelled tasks and runs, on the calling
  // thread, every batch that is ready at clock->Now(). Returns the number of batches run.
  int RunReadyBatches();

  // From now on every queue runs what it holds without waiting for max_queue_delay (drain);
  // new tasks are still accepted (requests already past preprocessing must get in).
  void StartFlushing();

  // Stops accepting, runs queued work until `timeout` passes (real time), drops the rest
  // with UNAVAILABLE and joins the workers. Returns true if nothing had to be dropped.
  bool Shutdown(absl::Duration timeout);

  int QueueDepth(const std::string& key) const;  // queued items; 0 for unknown keys
  int TotalDepth() const;

 private:
  struct Queue {
    BatchQueueOptions options;
    BatchProcessFn fn;
    std::vector<std::unique_ptr<BatchTask>> high, low;  // FIFO each
    int depth = 0;                                      // items in high + low
    bool removed = false;
    int running = 0;  // batches of this queue being processed
  };
  struct Picked {
    std::string key;
    std::shared_ptr<Queue> queue;
    std::vector<std::unique_ptr<BatchTask>> batch;
    bool low_only = false;
  };
  struct Dropped {
    std::unique_ptr<BatchTask> task;
    absl::Status status;
  };

  // Moves expired / cancelled tasks out of the queues.
  void PurgeLocked(absl::Time now, std::vector<Dropped>* dropped,
                   std::vector<std::pair<std::string, int>>* depths)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the next ready batch, or sets *next_wake to when one may become ready.
  bool PickLocked(absl::Time now, bool respect_low_limit, Picked* out, absl::Time* next_wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseIdleRemovedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunPicked(Picked& picked);
  void Finish(Picked& picked);
  void Report(const std::vector<Dropped>& dropped);  // completes dropped tasks; no lock held
  void ReportDepthsLocked(const std::vector<std::pair<std::string, int>>& depths)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop();

  const BatcherOptions options_;
  std::shared_ptr<Clock> clock_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  std::map<std::string, std::shared_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool flushing_ ABSL_GUARDED_BY(mu_) = false;  // shutting down: run everything queued now
  bool stop_ ABSL_GUARDED_BY(mu_) = false;      // workers exit
  int low_busy_ ABSL_GUARDED_BY(mu_) = 0;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by Notify / Enqueue
  std::vector<std::thread> workers_;
  bool shut_down_ = false;
};

}  // namespace eqsim
