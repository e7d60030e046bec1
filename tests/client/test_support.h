// Helpers of the client integration tests: a real eqsim-server child process, a TCP proxy
// whose connections can be cut (to drop streams on purpose), running the `eqsim` CLI, and a
// tiny native model repository written at test time.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace eqsim::testing {

inline std::string BinDir() {
  const char* d = std::getenv("EQSIM_BIN_DIR");
  return d != nullptr ? d : EQSIM_BINARY_DIR "/bin";
}

inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteAll(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << data;
}

inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a program with arguments (no shell interpretation of the arguments).
inline CommandResult Run(const std::vector<std::string>& argv, const std::string& scratch) {
  std::vector<std::string> quoted;
  for (const auto& a : argv) quoted.push_back(ShellQuote(a));
  const std::string out = scratch + "/cmd.out", err = scratch + "/cmd.err";
  const std::string cmd = absl::StrCat(absl::StrJoin(quoted, " "), " >", ShellQuote(out), " 2>",
                                       ShellQuote(err), " </dev/null");
  const int rc = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = ReadAll(out);
  r.err = ReadAll(err);
  return r;
}

// An eqsim-server child process on 127.0.0.1 (port chosen by the kernel unless given).
class ServerProcess {
 public:
  ServerProcess(std::vector<std::string> args, std::string dir) : args_(std::move(args)), dir_(std::move(dir)) {}
  ~ServerProcess() { Kill(); }

  // Starts it and waits for the port file; `port` 0 = any. Returns false on failure.
  bool Start(int port = 0) {
    std::filesystem::create_directories(dir_);
    const std::string port_file = dir_ + "/port";
    std::filesystem::remove(port_file);
    std::vector<std::string> argv = {BinDir() + "/eqsim-server", "--host=127.0.0.1",
                                     absl::StrCat("--port=", port), "--port_file=" + port_file,
                                     "--metrics_port=0"};
    argv.insert(argv.end(), args_.begin(), args_.end());
    const std::string log = dir_ + "/server.log";
    pid_ = fork();
    if (pid_ == 0) {
      // Never outlive the test, even when it crashes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execv(cargv[0], cargv.data());
      _exit(127);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    while (absl::Now() < deadline) {
      std::string p(absl::StripAsciiWhitespace(ReadAll(port_file)));
      if (!p.empty() && absl::SimpleAtoi(p, &port_) && port_ > 0) return true;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }
  void Signal(int sig) {
    if (pid_ > 0) kill(pid_, sig);
  }
  // SIGTERM (drain) then SIGKILL after `grace`.
  void Stop(absl::Duration grace = absl::Seconds(20)) {
    if (pid_ <= 0) return;
    kill(pid_, SIGCONT);
    kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + grace;
    int status;
    while (absl::Now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    Kill();
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  int port() const { return port_; }
  int pid() const { return pid_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  std::string log() const { return ReadAll(dir_ + "/server.log"); }

 private:
  std::vector<std::string> args_;
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// Forwards 127.0.0.1:port() to 127.0.0.1:target_port; DropAll() cuts every open connection
// (the peers see a reset stream), new connections keep working.
class TcpProxy {
 public:
  explicit TcpProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(listen_fd_, 64);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    accept_thread_.join();
    DropAll();
    std::vector<std::thread> pumps;
    {
      std::lock_guard<std::mutex> l(mu_);
      pumps.swap(pumps_);
    }
    for (auto& t : pumps) t.join();
    close(listen_fd_);
  }
  int port() const { return port_; }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  int connections() const { return accepted_.load(); }
  void DropAll() {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
  }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int client = accept(listen_fd_, nullptr, nullptr);
      if (client < 0) continue;
      int upstream = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(target_port_));
      if (connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        close(client);
        close(upstream);
        continue;
      }
      ++accepted_;
      std::lock_guard<std::mutex> l(mu_);
      fds_.push_back(client);
      fds_.push_back(upstream);
      pumps_.emplace_back([this, client, upstream] { Pump(client, upstream); });
    }
  }
  void Pump(int a, int b) {
    char buf[65536];
    pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    while (!stop_) {
      if (poll(p, 2, 50) < 0) break;
      bool closed = false;
      for (int i = 0; i < 2 && !closed; ++i) {
        if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          ssize_t n = read(p[i].fd, buf, sizeof(buf));
          if (n <= 0) {
            closed = true;
            break;
          }
          const int to = i == 0 ? b : a;
          ssize_t off = 0;
          while (off < n) {
            ssize_t w = write(to, buf + off, static_cast<size_t>(n - off));
            if (w <= 0) {
              closed = true;
              break;
            }
            off += w;
          }
        }
      }
      if (closed) break;
    }
    std::lock_guard<std::mutex> l(mu_);
    shutdown(a, SHUT_RDWR);
    shutdown(b, SHUT_RDWR);
    close(a);
    close(b);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), a), fds_.end());
    fds_.erase(std::remove(fds_.begin(), fds_.end(), b), fds_.end());
  }

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> fds_;
  std::vector<std::thread> pumps_;
};

}  // namespace eqsim::testing
