// A minimal HTTP/1.1 endpoint for Prometheus scrapes: GET /metrics returns the text
// exposition format of one registry; anything else is 404 (405 for other methods).
//
// Why not prometheus::Exposer: Debian 12's prometheus-cpp-pull serves through civetweb, whose
// mg_start returns NULL ("null context when constructing CivetServer") in any process that
// also loads Debian's libtorch_cpu.so.1.13, although the bind itself succeeds (reproduced with
// a five-line program; no symbol clash found). The server always loads LibTorch, so it serves
// /metrics with this small loop instead, keeping prometheus-cpp's registry and serializer.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace eqsim {

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 = any free port) and serves on one background thread.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();  // stops the thread and closes the socket

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Loop();
  void HandleConnection(int conn);

  int fd_;
  int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace eqsim
