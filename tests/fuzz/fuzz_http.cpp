// io/http: the input is the raw bytes a server answers (status line, headers, body), served
// once per run by a loopback server in this process to HttpClient::fetch_sync
// ("http://127.0.0.1:<port>/x"); libcurl parses it and the client's write callback, size limit
// and status handling run on it. Deterministic: no retries, no network (redirects to any other
// host go through a proxy address that refuses connections). No exceptions are documented:
// every outcome is an HttpResult.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "fuzz_util.h"
#include "io/http.h"

namespace {

std::mutex g_mu;
std::string g_response;  // what the server sends on each connection (guarded by g_mu)
int g_port = 0;

// Accepts connections forever: reads the request up to the blank line, sends g_response,
// closes. One connection at a time (fetch_sync is blocking; redirects back here reconnect).
void serve(int listener) {
  for (;;) {
    const int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) continue;
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < (1u << 16)) {
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string resp;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      resp = g_response;
    }
    size_t off = 0;
    while (off < resp.size()) {
      const ssize_t n = ::send(c, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::shutdown(c, SHUT_RDWR);
    ::close(c);
  }
}

void start_server() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(s, 16) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    std::abort();
  g_port = ntohs(addr.sin_port);
  std::thread(serve, s).detach();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Redirects to any host but this one go to a proxy port nobody listens on: refused at once.
  ::setenv("http_proxy", "http://127.0.0.1:9", 1);
  ::setenv("https_proxy", "http://127.0.0.1:9", 1);
  ::setenv("no_proxy", "127.0.0.1", 1);
  start_server();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_response.assign(reinterpret_cast<const char*>(data), size);
  }
  io::HttpOptions opts;
  opts.retries = 0;
  opts.connect_timeout_s = 2;
  opts.timeout_s = 3;
  opts.max_bytes = 1u << 20;
  opts.max_in_flight = 1;
  static io::HttpClient client(opts);
  const io::HttpResult r = client.fetch_sync("http://127.0.0.1:" + std::to_string(g_port) + "/x");
  if (r.ok && r.body.size() > opts.max_bytes) __builtin_trap();
  if (!r.ok && r.error.empty()) __builtin_trap();
  return 0;
}
