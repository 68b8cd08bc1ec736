// A minimal HTTP/1.0 server on 127.0.0.1 with an ephemeral port, run on a thread inside a
// test. Each path answers with a fixed status/body; a route can fail with 503 for its first
// N hits (to exercise retries) or stall before answering (to exercise timeouts). One thread
// per connection, "Connection: close". For tests only.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace recap::testing {

class LoopbackHttpServer {
 public:
  struct Route {
    int status = 200;
    std::string body;
    int fail_first = 0;  // answer 503 this many times first
    int stall_ms = 0;    // sleep before answering
  };

  LoopbackHttpServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 64) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  ~LoopbackHttpServer() {
    stop_ = true;
    if (fd_ >= 0) {
      ::shutdown(fd_, SHUT_RDWR);
      ::close(fd_);
    }
    if (thread_.joinable()) thread_.join();
    for (auto& t : workers_) t.join();
  }

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  void set(const std::string& path, Route r) {
    std::lock_guard<std::mutex> lk(mu_);
    routes_[path] = std::move(r);
  }
  int hits(const std::string& path) {
    std::lock_guard<std::mutex> lk(mu_);
    return hits_[path];
  }

 private:
  void serve() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) {
        if (stop_) return;
        continue;
      }
      std::lock_guard<std::mutex> lk(workers_mu_);
      workers_.emplace_back([this, c] { handle(c); });
    }
  }

  void handle(int c) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) {
        ::close(c);
        return;
      }
      req.append(buf, static_cast<size_t>(n));
    }
    size_t sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
    std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
    Route r;
    bool found = false;
    int hit = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      hit = ++hits_[path];
      auto it = routes_.find(path);
      if (it != routes_.end()) {
        r = it->second;
        found = true;
      }
    }
    if (!found) r.status = 404, r.body = "not found";
    if (found && hit <= r.fail_first) r.status = 503, r.body = "busy";
    if (r.stall_ms > 0) {
      // Sleep in small steps so the server stops promptly.
      for (int waited = 0; waited < r.stall_ms && !stop_; waited += 10)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::string head = "HTTP/1.0 " + std::to_string(r.status) +
                       " X\r\nContent-Length: " + std::to_string(r.body.size()) +
                       "\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
    std::string all = head + r.body;
    size_t off = 0;
    while (off < all.size()) {
      ssize_t n = ::send(c, all.data() + off, all.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(c);
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, Route> routes_;
  std::map<std::string, int> hits_;
  std::mutex workers_mu_;
  std::vector<std::thread> workers_;
};

}  // namespace recap::testing
