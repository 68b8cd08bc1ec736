// HTTP(S) fetching through libcurl's multi interface: one background thread drives up to
// `max_in_flight` transfers at once; each request has connect/total timeouts, a size limit,
// and retries with exponential backoff on transient failures (connection errors, timeouts,
// HTTP 408/429/5xx). 4xx answers and size-limit violations are final.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace recap::io {

struct HttpOptions {
  double connect_timeout_s = 10;
  double timeout_s = 60;   // whole transfer
  int retries = 3;         // extra attempts after the first
  double backoff_s = 0.5;  // first retry delay; doubles each retry
  double backoff_max_s = 30;
  uint64_t max_bytes = 64ull << 20;
  int max_in_flight = 16;
  std::string user_agent = "recap-engine (+https://github.com/; img2dataset-compatible)";
};

struct HttpResult {
  bool ok = false;
  long status = 0;    // last HTTP status (0 when no response)
  std::string body;   // on success
  std::string error;  // on failure: what went wrong ("HTTP 404", "timeout after 10 s", ...)
  int attempts = 0;
};

class HttpClient {
 public:
  using Callback = std::function<void(HttpResult)>;
  explicit HttpClient(HttpOptions opts = {});
  // Stops the thread; pending requests complete with error "cancelled".
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Queues a GET; `done` runs on the client's thread when the request is final.
  void fetch(const std::string& url, Callback done);
  // Blocking convenience wrapper.
  HttpResult fetch_sync(const std::string& url);
  // Cancels everything pending (callbacks get error "cancelled") and makes later fetch()
  // calls fail at once with "cancelled". Idempotent; the destructor calls it.
  void shutdown();
  const HttpOptions& options() const { return opts_; }

 private:
  struct Request;
  void run();

  HttpOptions opts_;
  std::mutex mu_;
  std::deque<std::unique_ptr<Request>> queue_;
  bool stop_ = false;
  void* multi_ = nullptr;  // CURLM*
  std::thread thread_;
};

}  // namespace recap::io
