#include "client/cli/loadtest.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace eqsim::cli {

absl::StatusOr<LoadMix> ParseMix(const std::string& spec) {
  LoadMix mix{0, 0, 0};
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    double w = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(kv.second), &w) || w < 0 || !std::isfinite(w)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--mix entry '", part, "': expected kind=weight with a non-negative number"));
    }
    if (key == "image") {
      mix.image = w;
    } else if (key == "text") {
      mix.text = w;
    } else if (key == "score") {
      mix.score = w;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--mix entry '", part,
                                                     "': unknown kind '", key,
                                                     "' (expected image, text or score)"));
    }
  }
  const double sum = mix.image + mix.text + mix.score;
  if (sum <= 0) return absl::InvalidArgumentError(absl::StrCat("--mix '", spec, "' has no positive weight"));
  mix.image /= sum;
  mix.text /= sum;
  mix.score /= sum;
  return mix;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t idx = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(sorted.size()))) - 1;
  return sorted[idx];
}

int64_t ReadRssKib(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = -1;
      std::string num(absl::StripAsciiWhitespace(absl::StripSuffix(
          absl::StripAsciiWhitespace(absl::string_view(line).substr(6)), "kB")));
      if (absl::SimpleAtoi(num, &kib)) return kib;
    }
  }
  return -1;
}

namespace {

enum Kind { kImage = 0, kText = 1, kScore = 2 };
const char* const kKindNames[] = {"image", "text", "score"};

struct Sample {
  double latency_ms;
  int kind;
  int64_t items;
  absl::StatusCode code;
};

struct WorkerLog {
  std::vector<Sample> samples;
  std::map<absl::StatusCode, std::string> first_error;
};

}  // namespace

absl::StatusOr<LoadtestReport> RunLoadtest(Client& client, const LoadtestOptions& o) {
  if (o.concurrency <= 0) return absl::InvalidArgumentError("--concurrency must be positive");
  if (o.rate < 0) return absl::InvalidArgumentError("--rate must be >= 0");
  if (o.duration <= absl::ZeroDuration()) return absl::InvalidArgumentError("--duration must be positive");
  if (o.images_per_request <= 0 || o.texts_per_request <= 0) {
    return absl::InvalidArgumentError("--images-per-request and --texts-per-request must be positive");
  }
  if ((o.mix.image > 0 || o.mix.score > 0) && o.images.empty()) {
    return absl::InvalidArgumentError("the mix has image or score requests but no images");
  }
  if ((o.mix.text > 0 || o.mix.score > 0) && o.texts.empty()) {
    return absl::InvalidArgumentError("the mix has text or score requests but no texts");
  }

  const absl::Time start = absl::Now();
  const absl::Time measure_from = start + o.warmup;
  const absl::Time end = measure_from + o.duration;
  std::atomic<int64_t> next_slot{0};
  std::atomic<int64_t> late{0};
  std::atomic<int64_t> live_requests{0}, live_errors{0};
  std::vector<WorkerLog> logs(static_cast<size_t>(o.concurrency));
  absl::Mutex live_mu;
  std::vector<double> live_latencies;  // recent successful latencies, for progress p50

  auto worker = [&](int w) {
    std::mt19937_64 rng(o.seed * 1000003 + static_cast<uint64_t>(w));
    std::uniform_real_distribution<double> u(0, 1);
    WorkerLog& log = logs[static_cast<size_t>(w)];
    while (true) {
      absl::Time scheduled;
      if (o.rate > 0) {
        const int64_t slot = next_slot.fetch_add(1);
        scheduled = start + absl::Seconds(static_cast<double>(slot) / o.rate);
        if (scheduled >= end) return;
        const absl::Time now = absl::Now();
        if (scheduled > now) {
          absl::SleepFor(scheduled - now);
        } else if (now - scheduled > absl::Milliseconds(10) && scheduled >= measure_from) {
          ++late;
        }
      } else {
        scheduled = absl::Now();
        if (scheduled >= end) return;
      }
      const double r = u(rng);
      const int kind = r < o.mix.image ? kImage : r < o.mix.image + o.mix.text ? kText : kScore;
      absl::Status status;
      int64_t items = 0;
      if (kind == kScore) {
        v1::ScoreRequest req;
        req.mutable_model()->set_name(o.model.name);
        req.mutable_model()->set_version(o.model.version);
        for (int i = 0; i < o.images_per_request; ++i)
          req.add_images(o.images[rng() % o.images.size()]);
        for (int i = 0; i < o.texts_per_request; ++i)
          req.add_texts(o.texts[rng() % o.texts.size()]);
        items = static_cast<int64_t>(o.images_per_request) * o.texts_per_request;
        status = client.ScoreRaw(req).status();
      } else {
        v1::EmbedRequest req;
        req.mutable_model()->set_name(o.model.name);
        req.mutable_model()->set_version(o.model.version);
        const int n = kind == kImage ? o.images_per_request : o.texts_per_request;
        for (int i = 0; i < n; ++i) {
          if (kind == kImage) {
            req.add_items()->set_image(o.images[rng() % o.images.size()]);
          } else {
            req.add_items()->set_text(o.texts[rng() % o.texts.size()]);
          }
        }
        items = n;
        status = client.EmbedRaw(req).status();
      }
      const absl::Time done = absl::Now();
      if (scheduled < measure_from) continue;  // warm-up
      const double ms = absl::ToDoubleMilliseconds(done - scheduled);
      log.samples.push_back({ms, kind, items, status.code()});
      ++live_requests;
      if (!status.ok()) {
        ++live_errors;
        log.first_error.emplace(status.code(), std::string(status.message()));
      } else {
        absl::MutexLock l(&live_mu);
        if (live_latencies.size() < 100000) live_latencies.push_back(ms);
      }
    }
  };

  LoadtestReport report;
  report.concurrency = o.concurrency;
  report.rate = o.rate;
  report.mix = o.mix;
  if (o.server_pid > 0) {
    report.rss_before_kib = report.rss_max_kib = ReadRssKib(o.server_pid);
    if (o.warmup <= absl::ZeroDuration()) report.rss_start_kib = report.rss_before_kib;
    if (report.rss_before_kib < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--server-pid ", o.server_pid, ": cannot read /proc/", o.server_pid,
                       "/status"));
    }
  }
  const absl::Time load_start = absl::Now();
  absl::Time next_rss_sample = load_start + o.rss_sample_every;
  if (o.server_pid > 0) report.rss_samples.emplace_back(0.0, report.rss_before_kib);
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(o.concurrency));
  for (int w = 0; w < o.concurrency; ++w) threads.emplace_back(worker, w);
  // Progress and RSS sampling from this thread until the end.
  while (absl::Now() < end) {
    absl::SleepFor(std::min(o.progress_every, std::max(absl::Milliseconds(1), end - absl::Now())));
    if (o.server_pid > 0) {
      const int64_t rss = ReadRssKib(o.server_pid);
      report.rss_max_kib = std::max(report.rss_max_kib, rss);
      const absl::Time now = absl::Now();
      if (report.rss_start_kib < 0 && now >= measure_from) report.rss_start_kib = rss;
      if (o.rss_sample_every > absl::ZeroDuration() && now >= next_rss_sample) {
        report.rss_samples.emplace_back(absl::ToDoubleSeconds(now - load_start), rss);
        next_rss_sample += o.rss_sample_every;
      }
    }
    if (o.progress) {
      double p50 = 0;
      {
        absl::MutexLock l(&live_mu);
        std::vector<double> v = std::move(live_latencies);
        live_latencies.clear();
        std::sort(v.begin(), v.end());
        p50 = Percentile(v, 50);
      }
      const absl::Time now = absl::Now();
      o.progress(now > measure_from ? now - measure_from : absl::ZeroDuration(),
                 live_requests.load(), live_errors.load(), p50);
    }
  }
  for (auto& t : threads) t.join();
  const absl::Time finished = absl::Now();
  if (o.server_pid > 0) {
    report.rss_end_kib = ReadRssKib(o.server_pid);
    report.rss_max_kib = std::max(report.rss_max_kib, report.rss_end_kib);
    if (report.rss_start_kib < 0) report.rss_start_kib = report.rss_end_kib;
    report.rss_samples.emplace_back(absl::ToDoubleSeconds(absl::Now() - load_start),
                                    report.rss_end_kib);
  }
  // The measured period ends when the last request finished (closed loop: requests still in
  // flight at `end` complete and count).
  report.seconds = absl::ToDoubleSeconds(std::max(finished, end) - measure_from);
  report.late_starts = late.load();

  std::vector<double> lat[3], all;
  auto& kinds = report.by_kind;
  for (int k = 0; k < 3; ++k)
    if ((k == kImage && o.mix.image > 0) || (k == kText && o.mix.text > 0) ||
        (k == kScore && o.mix.score > 0))
      kinds[kKindNames[k]];
  for (const WorkerLog& log : logs) {
    for (const Sample& s : log.samples) {
      LatencyStats& ks = kinds[kKindNames[s.kind]];
      ++ks.requests;
      ++report.all.requests;
      if (s.code == absl::StatusCode::kOk) {
        ++ks.ok;
        ++report.all.ok;
        ks.items += s.items;
        report.all.items += s.items;
        lat[s.kind].push_back(s.latency_ms);
        all.push_back(s.latency_ms);
      } else {
        ++ks.errors;
        ++report.all.errors;
        ++report.errors_by_code[absl::StatusCodeToString(s.code)];
      }
    }
    for (const auto& [code, msg] : log.first_error)
      report.first_error_by_code.emplace(absl::StatusCodeToString(code), msg);
  }
  auto fill = [](std::vector<double>& v, LatencyStats& st) {
    std::sort(v.begin(), v.end());
    st.p50_ms = Percentile(v, 50);
    st.p90_ms = Percentile(v, 90);
    st.p99_ms = Percentile(v, 99);
    st.max_ms = v.empty() ? 0 : v.back();
    double sum = 0;
    for (double x : v) sum += x;
    st.mean_ms = v.empty() ? 0 : sum / static_cast<double>(v.size());
  };
  for (int k = 0; k < 3; ++k) {
    auto it = kinds.find(kKindNames[k]);
    if (it != kinds.end()) fill(lat[k], it->second);
  }
  fill(all, report.all);
  report.throughput_rps = report.seconds > 0 ? report.all.ok / report.seconds : 0;
  report.items_per_second = report.seconds > 0 ? report.all.items / report.seconds : 0;
  return report;
}

std::string ReportToText(const LoadtestReport& r) {
  std::string out = absl::StrFormat(
      "loadtest: %.1fs measured, %s, mix image=%.2f text=%.2f score=%.2f\n", r.seconds,
      r.rate > 0 ? absl::StrFormat("open loop at %.1f req/s (max %d in flight)", r.rate,
                                   r.concurrency)
                 : absl::StrFormat("closed loop, concurrency %d", r.concurrency),
      r.mix.image, r.mix.text, r.mix.score);
  absl::StrAppendFormat(&out, "%-6s %9s %9s %7s %9s %10s %9s %9s %9s %9s %9s\n", "kind",
                        "requests", "ok", "errors", "req/s", "items/s", "p50 ms", "p90 ms",
                        "p99 ms", "max ms", "mean ms");
  auto row = [&](const std::string& name, const LatencyStats& s) {
    absl::StrAppendFormat(&out, "%-6s %9d %9d %7d %9.1f %10.1f %9.2f %9.2f %9.2f %9.2f %9.2f\n",
                          name, s.requests, s.ok, s.errors, r.seconds > 0 ? s.ok / r.seconds : 0,
                          r.seconds > 0 ? s.items / r.seconds : 0, s.p50_ms, s.p90_ms, s.p99_ms,
                          s.max_ms, s.mean_ms);
  };
  for (const auto& [name, s] : r.by_kind) row(name, s);
  row("all", r.all);
  if (!r.errors_by_code.empty()) {
    absl::StrAppend(&out, "errors by code:\n");
    for (const auto& [code, n] : r.errors_by_code) {
      auto it = r.first_error_by_code.find(code);
      absl::StrAppendFormat(&out, "  %-20s %8d  e.g. %s\n", code, n,
                            it == r.first_error_by_code.end() ? "" : it->second);
    }
  }
  if (r.rate > 0 && r.late_starts > 0) {
    absl::StrAppendFormat(&out,
                          "%d requests started more than 10 ms late (all workers busy: raise "
                          "--concurrency; their latency includes the wait)\n",
                          r.late_starts);
  }
  if (r.rss_start_kib >= 0) {
    absl::StrAppendFormat(
        &out,
        "server RSS: before load %.1f MiB, after warm-up %.1f MiB, end %.1f MiB, max %.1f MiB "
        "(measured period %+.1f MiB, %+.1f%%)\n",
        r.rss_before_kib / 1024.0, r.rss_start_kib / 1024.0, r.rss_end_kib / 1024.0,
        r.rss_max_kib / 1024.0, (r.rss_end_kib - r.rss_start_kib) / 1024.0,
        r.rss_start_kib > 0 ? 100.0 * (r.rss_end_kib - r.rss_start_kib) / r.rss_start_kib : 0.0);
    if (r.rss_samples.size() > 2) {
      out += "server RSS over time (s: MiB):";
      for (const auto& [t, kib] : r.rss_samples) {
        absl::StrAppendFormat(&out, " %.0f: %.1f", t, kib / 1024.0);
      }
      out += "\n";
    }
  }
  return out;
}

std::string ReportToJson(const LoadtestReport& r) {
  auto stats = [](const LatencyStats& s) {
    return nlohmann::json{{"requests", s.requests}, {"ok", s.ok},         {"errors", s.errors},
                          {"items", s.items},       {"p50_ms", s.p50_ms}, {"p90_ms", s.p90_ms},
                          {"p99_ms", s.p99_ms},     {"max_ms", s.max_ms}, {"mean_ms", s.mean_ms}};
  };
  nlohmann::json j;
  j["seconds"] = r.seconds;
  j["concurrency"] = r.concurrency;
  j["rate"] = r.rate;
  j["mix"] = {{"image", r.mix.image}, {"text", r.mix.text}, {"score", r.mix.score}};
  j["throughput_rps"] = r.throughput_rps;
  j["items_per_second"] = r.items_per_second;
  j["all"] = stats(r.all);
  j["by_kind"] = nlohmann::json::object();
  for (const auto& [name, s] : r.by_kind) j["by_kind"][name] = stats(s);
  j["errors_by_code"] = r.errors_by_code;
  j["first_error_by_code"] = r.first_error_by_code;
  j["late_starts"] = r.late_starts;
  if (r.rss_start_kib >= 0) {
    nlohmann::json samples = nlohmann::json::array();
    for (const auto& [t, kib] : r.rss_samples) samples.push_back({t, kib});
    j["server_rss_kib"] = {{"before", r.rss_before_kib}, {"start", r.rss_start_kib},
                           {"end", r.rss_end_kib},       {"max", r.rss_max_kib},
                           {"samples", samples}};
  }
  return j.dump();
}

}  // namespace eqsim::cli
