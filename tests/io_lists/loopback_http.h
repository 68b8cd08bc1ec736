// A minimal HTTP/1.0 server on 127.0.0.1 with an ephemeral port, run on a thread inside a
// test. Each path answers with a fixed status/body; a route can fail with 503 for its first
// N hits (to exercise retries) or stall before answering (to exercise timeouts), add header
// lines (X-Robots-Tag, Content-Encoding: gzip with a body the test compressed), send its body
// chunked without Content-Length (HTTP/1.1), or announce a Content-Length of its own. The
// User-Agent of each path's last request is kept. One thread per connection,
// "Connection: close". For tests only.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace recap::testing {

// gzip (RFC 1952) of `data`, as a server applying Content-Encoding: gzip sends it.
inline std::string gzip(const std::string& data) {
  z_stream zs{};
  if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("gzip: deflateInit2 failed");
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("gzip: deflate did not finish");
  return out;
}

class LoopbackHttpServer {
 public:
  struct Route {
    Route() = default;
    // {status, body, fail_first, stall_ms}: the positional form the tests use.
    Route(int status_, std::string body_, int fail_first_ = 0, int stall_ms_ = 0)
        : status(status_), body(std::move(body_)), fail_first(fail_first_), stall_ms(stall_ms_) {}
    int status = 200;
    std::string body;
    int fail_first = 0;                // answer 503 this many times first
    int stall_ms = 0;                  // sleep before answering
    std::vector<std::string> headers;  // extra header lines, e.g. "X-Robots-Tag: noai"
    bool chunked = false;              // HTTP/1.1, Transfer-Encoding: chunked, no Content-Length
    int64_t content_length = -1;       // >= 0: announce this instead of body.size()
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
  // The User-Agent header of the last request for `path` ("" if none came).
  std::string user_agent(const std::string& path) {
    std::lock_guard<std::mutex> lk(mu_);
    return user_agents_[path];
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
    std::string ua;
    for (size_t p = req.find("\r\n"); p != std::string::npos && p + 2 < req.size();
         p = req.find("\r\n", p + 2)) {
      const std::string name = "user-agent:";
      std::string line = req.substr(p + 2, req.find("\r\n", p + 2) - p - 2);
      std::string head = line.substr(0, std::min(line.size(), name.size()));
      for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (head == name) {
        ua = line.substr(name.size());
        ua.erase(0, ua.find_first_not_of(' '));
      }
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      hit = ++hits_[path];
      user_agents_[path] = ua;
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
    std::string head = (r.chunked ? "HTTP/1.1 " : "HTTP/1.0 ") + std::to_string(r.status) + " X\r\n";
    if (r.chunked)
      head += "Transfer-Encoding: chunked\r\n";
    else
      head += "Content-Length: " +
              std::to_string(r.content_length >= 0 ? r.content_length : static_cast<int64_t>(r.body.size())) +
              "\r\n";
    for (auto& h : r.headers) head += h + "\r\n";
    head += "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
    bool ok = send_all(c, head);
    if (r.chunked) {
      // 64 KiB chunks: a client that stops reading makes send() fail and the loop end.
      for (size_t off = 0; ok && off < r.body.size(); off += 65536) {
        const size_t n = std::min<size_t>(65536, r.body.size() - off);
        char len[32];
        std::snprintf(len, sizeof len, "%zx\r\n", n);
        ok = send_all(c, len) && send_all(c, r.body.substr(off, n) + "\r\n");
      }
      if (ok) send_all(c, "0\r\n\r\n");
    } else if (ok) {
      send_all(c, r.body);
    }
    ::close(c);
  }

  static bool send_all(int c, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(c, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, Route> routes_;
  std::map<std::string, int> hits_;
  std::map<std::string, std::string> user_agents_;
  std::mutex workers_mu_;
  std::vector<std::thread> workers_;
};

}  // namespace recap::testing
