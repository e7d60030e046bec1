#include "server/batcher.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace eqsim {

std::vector<std::pair<int, int>> SplitIntoChunks(int n, int max) {
  std::vector<std::pair<int, int>> out;
  if (max <= 0) max = 1;
  for (int b = 0; b < n; b += max) out.emplace_back(b, std::min(n, b + max));
  return out;
}

Batcher::Batcher(BatcherOptions options)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock : RealClock::Shared()) {
  for (int i = 0; i < options_.num_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

Batcher::~Batcher() { Shutdown(absl::ZeroDuration()); }

absl::Status Batcher::AddQueue(const std::string& key, BatchQueueOptions options,
                               BatchProcessFn fn) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue '%s': max_batch_size must be >= 1, got %d", key, options.max_batch_size));
  }
  if (options.max_queue_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue '%s': max_queue_size must be >= 1, got %d", key, options.max_queue_size));
  }
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue '%s': max_queue_delay must be >= 0", key));
  }
  if (!fn) return absl::InvalidArgumentError("queue '" + key + "': no process function");
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(key);
  if (it != queues_.end()) {
    return absl::AlreadyExistsError("batch queue '" + key + "' already exists");
  }
  auto q = std::make_shared<Queue>();
  q->options = options;
  q->fn = std::move(fn);
  queues_[key] = std::move(q);
  return absl::OkStatus();
}

void Batcher::RemoveQueue(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(key);
  if (it == queues_.end()) return;
  it->second->removed = true;
  EraseIdleRemovedLocked();
  ++generation_;
  cv_.SignalAll();
}

bool Batcher::HasQueue(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(key);
  return it != queues_.end() && !it->second->removed;
}

void Batcher::EraseIdleRemovedLocked() {
  for (auto it = queues_.begin(); it != queues_.end();) {
    if (it->second->removed && it->second->depth == 0 && it->second->running == 0) {
      it = queues_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::Status Batcher::Enqueue(const std::string& key,
                              std::vector<std::unique_ptr<BatchTask>> tasks) {
  std::vector<Dropped> dropped;
  std::vector<std::pair<std::string, int>> depths;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    auto it = queues_.find(key);
    if (!accepting_) {
      status = absl::UnavailableError("server is shutting down; not accepting new work");
    } else if (it == queues_.end() || it->second->removed) {
      status = absl::UnavailableError("model queue '" + key + "' is not being served");
    } else {
      Queue& q = *it->second;
      int total = 0;
      for (size_t i = 0; i < tasks.size() && status.ok(); ++i) {
        if (tasks[i]->size < 1 || tasks[i]->size > q.options.max_batch_size) {
          status = absl::InvalidArgumentError(absl::StrFormat(
              "queue '%s': task %d has %d items; must be 1..max_batch_size (%d)", key, i,
              tasks[i]->size, q.options.max_batch_size));
        }
        total += tasks[i]->size;
      }
      const absl::Time now = clock_->Now();
      if (status.ok()) PurgeLocked(now, &dropped, &depths);  // frees space held by the dead
      if (status.ok() && q.depth + total > q.options.max_queue_size) {
        status = absl::ResourceExhaustedError(absl::StrFormat(
            "queue '%s' is full: %d items waiting + %d requested > max_queue_size %d; "
            "retry with backoff",
            key, q.depth, total, q.options.max_queue_size));
      }
      if (status.ok()) {
        for (auto& t : tasks) {
          t->enqueue_time = now;
          (t->priority == Priority::kHigh ? q.high : q.low).push_back(std::move(t));
        }
        q.depth += total;
        depths.emplace_back(key, q.depth);
        ++generation_;
        cv_.SignalAll();
      }
    }
    ReportDepthsLocked(depths);
  }
  Report(dropped);
  return status;
}

void Batcher::StartFlushing() {
  absl::MutexLock lock(&mu_);
  flushing_ = true;
  ++generation_;
  cv_.SignalAll();
}

void Batcher::Notify() {
  absl::MutexLock lock(&mu_);
  ++generation_;
  cv_.SignalAll();
}

void Batcher::PurgeLocked(absl::Time now, std::vector<Dropped>* dropped,
                          std::vector<std::pair<std::string, int>>* depths) {
  for (auto& [key, qp] : queues_) {
    Queue& q = *qp;
    bool changed = false;
    for (auto* list : {&q.high, &q.low}) {
      auto keep = list->begin();
      for (auto it = list->begin(); it != list->end(); ++it) {
        BatchTask& t = **it;
        absl::Status why;
        // Deadline first: gRPC also cancels a call whose deadline passed, and that call must
        // still end as DEADLINE_EXCEEDED, whichever of the two the batcher notices first.
        if (now >= t.deadline) {
          why = absl::DeadlineExceededError(absl::StrFormat(
              "deadline passed after %s waiting in queue '%s'; not computed",
              absl::FormatDuration(now - t.enqueue_time), key));
        } else if (t.cancel && t.cancel->IsCancelled()) {
          why = absl::CancelledError("request cancelled while waiting in queue '" + key + "'");
        }
        if (why.ok()) {
          if (keep != it) *keep = std::move(*it);
          ++keep;
        } else {
          q.depth -= t.size;
          changed = true;
          dropped->push_back({std::move(*it), why});
        }
      }
      list->erase(keep, list->end());
    }
    if (changed) depths->emplace_back(key, q.depth);
  }
}

bool Batcher::PickLocked(absl::Time now, bool respect_low_limit, Picked* out,
                         absl::Time* next_wake) {
  std::shared_ptr<Queue> best;
  std::string best_key;
  bool best_high = false;
  absl::Time best_time = absl::InfiniteFuture();
  for (auto& [key, qp] : queues_) {
    Queue& q = *qp;
    if (q.depth == 0) continue;
    for (auto* list : {&q.high, &q.low}) {
      for (auto& t : *list) *next_wake = std::min(*next_wake, t->deadline);
    }
    absl::Time oldest = absl::InfiniteFuture();
    if (!q.high.empty()) oldest = std::min(oldest, q.high.front()->enqueue_time);
    if (!q.low.empty()) oldest = std::min(oldest, q.low.front()->enqueue_time);
    const bool ready = q.depth >= q.options.max_batch_size ||
                       now >= oldest + q.options.max_queue_delay || flushing_ || q.removed;
    if (!ready) {
      *next_wake = std::min(*next_wake, oldest + q.options.max_queue_delay);
      continue;
    }
    const bool has_high = !q.high.empty();
    if (!has_high && respect_low_limit && options_.max_low_priority_workers > 0 &&
        low_busy_ >= options_.max_low_priority_workers) {
      continue;  // woken again when a LOW batch finishes
    }
    const absl::Time t = has_high ? q.high.front()->enqueue_time : q.low.front()->enqueue_time;
    if (!best || (has_high && !best_high) || (has_high == best_high && t < best_time)) {
      best = qp;
      best_key = key;
      best_high = has_high;
      best_time = t;
    }
  }
  if (!best) return false;
  Queue& q = *best;
  int total = 0;
  std::vector<std::unique_ptr<BatchTask>> batch;
  size_t h = 0;
  while (h < q.high.size() && total + q.high[h]->size <= q.options.max_batch_size) {
    total += q.high[h]->size;
    batch.push_back(std::move(q.high[h++]));
  }
  q.high.erase(q.high.begin(), q.high.begin() + h);
  if (q.high.empty()) {
    size_t l = 0;
    while (l < q.low.size() && total + q.low[l]->size <= q.options.max_batch_size) {
      total += q.low[l]->size;
      batch.push_back(std::move(q.low[l++]));
    }
    q.low.erase(q.low.begin(), q.low.begin() + l);
  }
  q.depth -= total;
  ++q.running;
  out->key = best_key;
  out->queue = best;
  out->batch = std::move(batch);
  out->low_only = !best_high;
  return true;
}

void Batcher::Report(const std::vector<Dropped>& dropped) {
  for (const auto& d : dropped) d.task->Drop(d.status);
}

void Batcher::ReportDepthsLocked(const std::vector<std::pair<std::string, int>>& depths) {
  // Under the lock, so observers see depth changes in the order they happened (reporting
  // after unlocking let a slower thread overwrite a newer depth with an older one).
  if (options_.on_depth) {
    for (const auto& [key, depth] : depths) options_.on_depth(key, depth);
  }
}

void Batcher::RunPicked(Picked& picked) {
  // The process function owns the tasks from here on and must complete each one.
  picked.queue->fn(std::move(picked.batch));
}

void Batcher::Finish(Picked& picked) {
  --picked.queue->running;
  EraseIdleRemovedLocked();
  ++generation_;
  cv_.SignalAll();
}

int Batcher::RunReadyBatches() {
  int ran = 0;
  while (true) {
    std::vector<Dropped> dropped;
    std::vector<std::pair<std::string, int>> depths;
    Picked picked;
    bool got;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = clock_->Now();
      PurgeLocked(now, &dropped, &depths);
      absl::Time next = absl::InfiniteFuture();
      got = PickLocked(now, /*respect_low_limit=*/false, &picked, &next);
      if (got) depths.emplace_back(picked.key, picked.queue->depth);
      EraseIdleRemovedLocked();
      ReportDepthsLocked(depths);
    }
    Report(dropped);
    if (!got) return ran;
    RunPicked(picked);
    ++ran;
    absl::MutexLock lock(&mu_);
    Finish(picked);
  }
}

void Batcher::WorkerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    std::vector<Dropped> dropped;
    std::vector<std::pair<std::string, int>> depths;
    const absl::Time now = clock_->Now();
    PurgeLocked(now, &dropped, &depths);
    Picked picked;
    absl::Time next = absl::InfiniteFuture();
    const bool got = PickLocked(now, /*respect_low_limit=*/true, &picked, &next);
    if (got) {
      depths.emplace_back(picked.key, picked.queue->depth);
      ++busy_;
      if (picked.low_only) ++low_busy_;
    }
    if (!dropped.empty() || !depths.empty() || got) {
      ReportDepthsLocked(depths);
      mu_.Unlock();
      Report(dropped);
      if (got) RunPicked(picked);
      mu_.Lock();
      if (got) {
        --busy_;
        if (picked.low_only) --low_busy_;
        Finish(picked);
      }
      continue;
    }
    // Nothing to do now: sleep until a batch may become ready, a deadline passes, or a
    // Notify / Enqueue. Real time: threaded mode always runs on the real clock's pace.
    const uint64_t gen = generation_;
    const absl::Time wake = absl::Now() + std::min(next - now, absl::Seconds(1));
    while (!stop_ && gen == generation_ && absl::Now() < wake) {
      cv_.WaitWithDeadline(&mu_, wake);
    }
  }
}

bool Batcher::Shutdown(absl::Duration timeout) {
  if (shut_down_) return true;
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    flushing_ = true;
    ++generation_;
    cv_.SignalAll();
  }
  if (workers_.empty()) {
    RunReadyBatches();
  } else {
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (busy_ > 0) return false;
      for (auto& [k, q] : queues_) {
        if (q->depth > 0) return false;
      }
      return true;
    };
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  }
  std::vector<Dropped> dropped;
  std::vector<std::pair<std::string, int>> depths;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    for (auto& [key, q] : queues_) {
      for (auto* list : {&q->high, &q->low}) {
        for (auto& t : *list) {
          dropped.push_back({std::move(t), absl::UnavailableError(
                                               "server shut down before the request ran")});
        }
        list->clear();
      }
      if (q->depth) depths.emplace_back(key, 0);
      q->depth = 0;
    }
    ReportDepthsLocked(depths);
    cv_.SignalAll();
  }
  Report(dropped);
  for (auto& w : workers_) w.join();
  workers_.clear();
  shut_down_ = true;
  return dropped.empty();
}

int Batcher::QueueDepth(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(key);
  return it == queues_.end() ? 0 : it->second->depth;
}

int Batcher::TotalDepth() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (auto& [k, q] : queues_) n += q->depth;
  return n;
}

}  // namespace eqsim
