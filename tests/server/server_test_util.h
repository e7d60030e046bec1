// Helpers of the server integration tests: tiny model repositories made at test time, the
// REAL eqsim-server binary started on loopback, Prometheus scraping, health checks.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eqsim/v1/similarity.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace eqsim::testing {

// A fresh folder under $TMPDIR (removed by the destructor).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// The words of the tiny models' vocabulary.
const std::vector<std::string>& TinyVocabulary();

// Writes <repo>/<name>/config.pbtxt (+ vocab.txt) of a tiny native model; `extra` is appended
// to the config text (e.g. "batching { max_batch_size: 4 }").
void WriteTinyModelConfig(const std::string& repo, const std::string& name,
                          const std::string& extra = "");
// Writes <repo>/<name>/<version>/weights.pt with random weights from `seed`.
void WriteTinyModelVersion(const std::string& repo, const std::string& name, int64_t version,
                           uint64_t seed);

// A PNG of w x h pixels: a colour gradient determined by `seed`.
std::string TestPng(int w, int h, int seed);
void WriteFile(const std::string& path, const std::string& data);
std::string ReadFile(const std::string& path);

int FreePort();

// The real eqsim-server, started with `args` (plus --port=0 --port-file, --host=127.0.0.1).
class ServerProcess {
 public:
  // Starts and waits until the port file appears. Fails the test (ADD_FAILURE) on timeout.
  explicit ServerProcess(std::vector<std::string> args, const std::string& log_path = "");
  ~ServerProcess();  // SIGKILL if still running

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::shared_ptr<grpc::Channel> Channel() const;
  std::unique_ptr<v1::SimilarityService::Stub> Stub() const;
  // Health Check of service "" over `channel` (default: a plaintext channel): SERVING,
  // NOT_SERVING, ... or the RPC error's code name.
  std::string Health(std::shared_ptr<grpc::Channel> channel = nullptr) const;
  // Polls Health() until it equals `want` (timeout 120 s); returns the last answer.
  std::string WaitHealth(const std::string& want) const;
  // Sends `sig` and waits for the exit; returns the exit code (or 128 + signal).
  int Stop(int sig);
  bool running() const { return pid_ > 0; }
  std::string log() const;  // the server's stderr so far
  std::string Scrape() const;  // GET /metrics

 private:
  mutable pid_t pid_ = -1;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
  std::unique_ptr<TempDir> dir_;
};

// The value of the first series of `name` whose labels include all of `labels`, or -1.
double MetricValue(const std::string& scrape, const std::string& name,
                   const std::map<std::string, std::string>& labels = {});

// Runs a shell command; returns its exit status and fills *out with stdout (+stderr).
int RunCommand(const std::string& cmd, std::string* out = nullptr);

}  // namespace eqsim::testing
