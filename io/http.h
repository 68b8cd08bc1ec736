// HTTP(S) fetching through libcurl's multi interface: one background thread drives up to
// `max_in_flight` transfers at once; each request has connect/total timeouts, a size limit,
// and retries with exponential backoff on transient failures (connection errors, timeouts,
// HTTP 408/429/5xx). 4xx answers, size-limit violations and X-Robots-Tag opt-outs are final.
//
// Size: every body byte is counted as it streams in (the write callback sees the bytes after
// Content-Encoding gzip/deflate/br is undone), and the transfer is aborted as soon as more than
// max_bytes arrived, whether or not the server sent Content-Length; a Content-Length above
// max_bytes stops before the body; the encoded bytes on the wire are bounded too (wire_limit),
// so a body that inflates to little from a huge stream also stops.
//
// X-Robots-Tag: as img2dataset does by default, an answer whose X-Robots-Tag header carries one
// of disallowed_header_directives, globally ("noai") or addressed to user_agent_token
// ("recap-engine: noai"), fails with img2dataset's message; directives addressed to other
// agents are ignored. An empty list disables the check.
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
  std::string user_agent = user_agent_for("");
  // img2dataset's --user_agent_token / --disallowed_header_directives (same defaults, with
  // our own token).
  std::string user_agent_token = "recap-engine";
  std::vector<std::string> disallowed_header_directives{"noai", "noimageai", "noindex", "noimageindex"};

  // "recap-engine/<version> (image recaptioning; opt out with X-Robots-Tag: noai or
  // X-Robots-Tag: recap-engine: noai)": names the engine, its version and how to opt out.
  static std::string user_agent_for(const std::string& version);
  // Encoded bytes accepted on the wire: max_bytes plus what deflate/brotli framing can add to
  // incompressible data (far less than 1/16), so an encoded body whose content fits the limit
  // always fits this one.
  uint64_t wire_limit() const { return max_bytes + (max_bytes >> 4) + 65536; }
};

// "noai, NoIndex,," -> {"noai", "noindex"}: comma-separated, trimmed, lower-cased, empty ones
// dropped (the --disallowed-header-directives flag).
std::vector<std::string> parse_directive_list(const std::string& text);

// The X-Robots-Tag directive of `header_values` (one entry per header line) that forbids use
// under img2dataset's rule, or "" when none does. `user_agent_token` is lower case.
std::string disallowing_robots_directive(const std::vector<std::string>& header_values,
                                         const std::string& user_agent_token,
                                         const std::vector<std::string>& disallowed);

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

  struct Request;  // one queued or running transfer (public for the libcurl callbacks)

 private:
  void run();

  HttpOptions opts_;
  std::mutex mu_;
  std::deque<std::unique_ptr<Request>> queue_;
  bool stop_ = false;
  void* multi_ = nullptr;  // CURLM*
  std::thread thread_;
};

}  // namespace recap::io
