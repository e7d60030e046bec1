#include "tests/server/server_test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "model/image/preprocess.h"
#include "model/nn/native_init.h"
#include "model/repo/repository.h"
#include "model/text/word_tokenizer.h"
#include "opencv2/core.hpp"

namespace eqsim::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/eqsim-server-test-XXXXXX";
  char* p = mkdtemp(tmpl.data());
  path_ = p ? p : "";
}
TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) fs::remove_all(path_, ec);
}

const std::vector<std::string>& TinyVocabulary() {
  static const auto* v = new std::vector<std::string>{
      "a", "and", "bag", "blue", "boot", "dress", "green", "red", "shirt", "sneaker", "two"};
  return *v;
}

namespace {
std::string TinyConfigText(const std::string& name, const std::string& extra) {
  return absl::StrCat("name: \"", name, "\"\n", R"(backend: NATIVE
embed_dim: 16
image { recipe: NATIVE size: 32 }
tokenizer { kind: WORD vocab_file: "vocab.txt" context_length: 8 }
native { image_width: 8 image_stages: 2 image_blocks: 1 text_width: 16 text_layers: 1
         text_heads: 2 embed_dim: 16 image_pool_grid: 1 }
)",
                      extra, "\n");
}
}  // namespace

void WriteFile(const std::string& path, const std::string& data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteTinyModelConfig(const std::string& repo, const std::string& name,
                          const std::string& extra) {
  std::string vocab;
  for (const auto& w : TinyVocabulary()) absl::StrAppend(&vocab, w, "\n");
  WriteFile(repo + "/" + name + "/vocab.txt", vocab);
  WriteFile(repo + "/" + name + "/config.pbtxt", TinyConfigText(name, extra));
}

void WriteTinyModelVersion(const std::string& repo, const std::string& name, int64_t version,
                           uint64_t seed) {
  auto cfg = ParseModelConfig(TinyConfigText(name, ""), "tiny config");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  // Written next to the repository first, then moved in, so that a polling server never sees
  // a half-written version folder.
  const std::string staging = repo + "/.staging-" + name + "-" + std::to_string(version);
  absl::Status s = WriteInitialNativeWeights(
      *cfg, kWordSpecialTokens + static_cast<int>(TinyVocabulary().size()), seed, staging);
  ASSERT_TRUE(s.ok()) << s;
  fs::create_directories(repo + "/" + name);
  fs::rename(staging, repo + "/" + name + "/" + std::to_string(version));
}

std::string TestPng(int w, int h, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>((x * 7 + seed * 37) % 256),
                                        static_cast<uint8_t>((y * 5 + seed * 91) % 256),
                                        static_cast<uint8_t>((x * y + seed * 13) % 256));
    }
  }
  return EncodePng(m);
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

int RunCommand(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) s.append(buf, n);
  const int status = pclose(p);
  if (out) *out = s;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

ServerProcess::ServerProcess(std::vector<std::string> args, const std::string& log_path)
    : dir_(std::make_unique<TempDir>()) {
  log_path_ = log_path.empty() ? *dir_ / "server.log" : log_path;
  const std::string port_file = *dir_ / "port";
  bool has_metrics = false;
  for (const auto& a : args) has_metrics |= a.rfind("--metrics-port", 0) == 0;
  if (!has_metrics) {
    metrics_port_ = FreePort();
    args.push_back("--metrics-port=" + std::to_string(metrics_port_));
  } else {
    for (const auto& a : args) {
      if (a.rfind("--metrics-port=", 0) == 0) metrics_port_ = std::stoi(a.substr(15));
    }
  }
  args.push_back("--port=0");
  args.push_back("--host=127.0.0.1");
  args.push_back("--port-file=" + port_file);
  const char* bin_dir = std::getenv("EQSIM_BIN_DIR");
  const std::string bin = std::string(bin_dir ? bin_dir : EQSIM_BINARY_DIR "/bin") + "/eqsim-server";
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(bin.c_str()));
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 2);
    dup2(fd, 1);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  for (int i = 0; i < 1200; ++i) {
    std::ifstream in(port_file);
    if (in >> port_ && port_ > 0) return;
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      ADD_FAILURE() << "eqsim-server exited at start:\n" << log();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "eqsim-server did not start listening:\n" << log();
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::shared_ptr<grpc::Channel> ServerProcess::Channel() const {
  return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
}

std::unique_ptr<v1::SimilarityService::Stub> ServerProcess::Stub() const {
  return v1::SimilarityService::NewStub(Channel());
}

std::string ServerProcess::Health(std::shared_ptr<grpc::Channel> channel) const {
  if (!channel) channel = Channel();
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return "RPC_ERROR_" + std::to_string(s.error_code());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

std::string ServerProcess::WaitHealth(const std::string& want) const {
  std::string got;
  if (pid_ <= 0) return "NOT_RUNNING";
  for (int i = 0; i < 1200; ++i) {
    int status;
    if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      ADD_FAILURE() << "eqsim-server exited:\n" << log();
      return "EXITED";
    }
    got = Health();
    if (got == want) return got;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return got;
}

int ServerProcess::Stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string ServerProcess::log() const { return ReadFile(log_path_); }

std::string ServerProcess::Scrape() const {
  std::string out;
  RunCommand("curl -sf http://127.0.0.1:" + std::to_string(metrics_port_) + "/metrics", &out);
  return out;
}

double MetricValue(const std::string& scrape, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (line.substr(0, name.size()) != name) continue;
    absl::string_view rest = line.substr(name.size());
    if (!rest.empty() && rest[0] != '{' && rest[0] != ' ') continue;  // a longer name
    bool all = true;
    for (const auto& [k, v] : labels) {
      all &= line.find(absl::StrCat(k, "=\"", v, "\"")) != absl::string_view::npos;
    }
    if (!all) continue;
    const size_t sp = line.rfind(' ');
    return std::stod(std::string(line.substr(sp + 1)));
  }
  return -1;
}

}  // namespace eqsim::testing
