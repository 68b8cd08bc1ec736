#include "io/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>

namespace recap::io {

namespace {
using Clock = std::chrono::steady_clock;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}
}  // namespace

std::string HttpOptions::user_agent_for(const std::string& version) {
  std::string ua = "recap-engine";
  if (!version.empty()) ua += "/" + version;
  ua += " (image recaptioning; opt out with X-Robots-Tag: noai or X-Robots-Tag: recap-engine: noai)";
  return ua;
}

namespace {
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}
}  // namespace

std::vector<std::string> parse_directive_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string d = lower(trim(text.substr(start, comma - start)));
    if (!d.empty()) out.push_back(std::move(d));
    start = comma + 1;
  }
  return out;
}

std::string disallowing_robots_directive(const std::vector<std::string>& header_values,
                                         const std::string& user_agent_token,
                                         const std::vector<std::string>& disallowed) {
  // img2dataset's is_disallowed: "token: d1, d2" addresses an agent (only ours counts),
  // "d1, d2" addresses every agent; directives compare stripped and lower-cased.
  for (const std::string& value : header_values) {
    const size_t colon = value.find(':');
    if (colon != std::string::npos && lower(value.substr(0, colon)) != user_agent_token) continue;
    std::string rest = colon == std::string::npos ? value : value.substr(colon + 1);
    size_t start = 0;
    while (start <= rest.size()) {
      size_t comma = rest.find(',', start);
      if (comma == std::string::npos) comma = rest.size();
      const std::string directive = lower(trim(rest.substr(start, comma - start)));
      if (std::find(disallowed.begin(), disallowed.end(), directive) != disallowed.end()) return directive;
      start = comma + 1;
    }
  }
  return {};
}

struct HttpClient::Request {
  std::string url;
  Callback done;
  int attempts = 0;
  Clock::time_point not_before{};
  // Per-attempt state.
  CURL* easy = nullptr;
  const HttpOptions* opts = nullptr;
  std::string body;
  bool too_big = false;                // more than max_bytes of (decoded) body arrived
  bool wire_too_big = false;           // more than wire_limit() encoded bytes arrived
  long header_status = 0;              // status of the response whose headers are being read
  int64_t header_content_length = -1;  // its Content-Length (-1: none)
  std::vector<std::string> robots;     // that response's X-Robots-Tag values
  std::string robots_directive;        // set when an X-Robots-Tag forbids use
  char errbuf[CURL_ERROR_SIZE] = {0};

  // Checked once the final response's headers are complete (first body byte or the end).
  bool robots_forbid() {
    if (header_status < 200 || header_status >= 300 || opts->disallowed_header_directives.empty())
      return false;
    if (robots_directive.empty())
      robots_directive = disallowing_robots_directive(robots, lower(opts->user_agent_token),
                                                      opts->disallowed_header_directives);
    return !robots_directive.empty();
  }
};

namespace {
using Request = HttpClient::Request;

size_t write_cb(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* r = static_cast<Request*>(userdata);
  const size_t n = size * nmemb;
  // Returning less than n aborts the transfer (CURLE_WRITE_ERROR); the flags say why.
  if (r->body.empty() && r->robots_forbid()) return 0;
  if (r->body.size() + n > r->opts->max_bytes) {
    r->too_big = true;
    return 0;
  }
  r->body.append(ptr, n);
  return n;
}

size_t header_cb(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* r = static_cast<Request*>(userdata);
  const size_t n = size * nitems;
  const std::string line(buffer, n);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response (after a redirect or a 100 Continue): only the last one's headers count.
    r->robots.clear();
    r->robots_directive.clear();
    r->header_content_length = -1;
    const size_t sp = line.find(' ');
    r->header_status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return n;
  const std::string name = lower(trim(line.substr(0, colon)));
  if (name == "x-robots-tag") r->robots.push_back(trim(line.substr(colon + 1)));
  // Kept for the message: libcurl does not report it when CURLOPT_MAXFILESIZE refused it.
  if (name == "content-length") r->header_content_length = std::atoll(line.c_str() + colon + 1);
  return n;
}

int progress_cb(void* userdata, curl_off_t /*dltotal*/, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* r = static_cast<Request*>(userdata);
  if (dlnow > 0 && static_cast<uint64_t>(dlnow) > r->opts->wire_limit()) {
    r->wire_too_big = true;
    return 1;  // CURLE_ABORTED_BY_CALLBACK
  }
  return 0;
}
}  // namespace

HttpClient::HttpClient(HttpOptions opts) : opts_(std::move(opts)) {
  global_init();
  multi_ = curl_multi_init();
  thread_ = std::thread([this] { run(); });
}

void HttpClient::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

HttpClient::~HttpClient() {
  shutdown();
  thread_.join();
  curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

void HttpClient::fetch(const std::string& url, Callback done) {
  auto r = std::make_unique<Request>();
  r->url = url;
  r->done = std::move(done);
  bool stopped;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopped = stop_;
    if (!stopped) queue_.push_back(std::move(r));
  }
  if (stopped) {
    HttpResult res;
    res.error = "cancelled";
    r->done(std::move(res));
    return;
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

HttpResult HttpClient::fetch_sync(const std::string& url) {
  std::promise<HttpResult> p;
  auto f = p.get_future();
  fetch(url, [&p](HttpResult r) { p.set_value(std::move(r)); });
  return f.get();
}

void HttpClient::run() {
  CURLM* multi = static_cast<CURLM*>(multi_);
  std::map<CURL*, std::unique_ptr<Request>> active;
  std::vector<std::unique_ptr<Request>> waiting;  // retries waiting for their backoff

  auto start = [&](std::unique_ptr<Request> r) {
    CURL* e = curl_easy_init();
    r->easy = e;
    r->body.clear();
    r->opts = &opts_;
    r->too_big = false;
    r->wire_too_big = false;
    r->header_status = 0;
    r->header_content_length = -1;
    r->robots.clear();
    r->robots_directive.clear();
    r->errbuf[0] = 0;
    r->attempts++;
    curl_easy_setopt(e, CURLOPT_URL, r->url.c_str());
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts_.connect_timeout_s * 1000));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(opts_.timeout_s * 1000));
    curl_easy_setopt(e, CURLOPT_USERAGENT, opts_.user_agent.c_str());
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(opts_.max_bytes));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r.get());
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r.get());
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, r.get());
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    // Only http(s): a list must not make us read local files or talk other protocols.
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_multi_add_handle(multi, e);
    active[e] = std::move(r);
  };

  auto finish = [&](std::unique_ptr<Request> r, HttpResult res) {
    res.attempts = r->attempts;
    r->done(std::move(res));
  };

  for (;;) {
    std::vector<std::unique_ptr<Request>> fresh;
    bool stop;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop = stop_;
      size_t room = active.size() >= static_cast<size_t>(opts_.max_in_flight)
                        ? 0
                        : static_cast<size_t>(opts_.max_in_flight) - active.size();
      while (!stop && room > 0 && !queue_.empty()) {
        fresh.push_back(std::move(queue_.front()));
        queue_.pop_front();
        --room;
      }
    }
    if (stop) break;
    // Retries whose backoff elapsed go first (they are older).
    auto now = Clock::now();
    for (size_t i = 0; i < waiting.size();) {
      if (waiting[i]->not_before <= now && active.size() < static_cast<size_t>(opts_.max_in_flight)) {
        start(std::move(waiting[i]));
        waiting.erase(waiting.begin() + static_cast<long>(i));
      } else {
        ++i;
      }
    }
    for (auto& r : fresh) start(std::move(r));

    int running = 0;
    curl_multi_perform(multi, &running);
    int msgs = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &msgs)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* e = m->easy_handle;
      CURLcode code = m->data.result;
      auto it = active.find(e);
      std::unique_ptr<Request> r = std::move(it->second);
      active.erase(it);
      long status = 0;
      curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi, e);
      curl_easy_cleanup(e);
      r->easy = nullptr;

      HttpResult res;
      res.status = status;
      bool retryable = false;
      const std::string limit = "larger than the size limit of " + std::to_string(opts_.max_bytes) + " bytes";
      if (r->too_big) {
        res.error = "too_large: body " + limit;
      } else if (r->wire_too_big) {
        res.error = "too_large: encoded body larger than the wire limit of " +
                    std::to_string(opts_.wire_limit()) + " bytes";
      } else if (code == CURLE_FILESIZE_EXCEEDED) {
        res.error =
            r->header_content_length >= 0
                ? "too_large: Content-Length " + std::to_string(r->header_content_length) + ", " + limit
                : "too_large: " + limit;
      } else if ((code == CURLE_OK || code == CURLE_WRITE_ERROR) && r->robots_forbid()) {
        // img2dataset's message, with the directive that applied.
        res.error = "Use of image disallowed by X-Robots-Tag directive (" + r->robots_directive + ")";
      } else if (code == CURLE_OK && status >= 200 && status < 300) {
        res.ok = true;
        res.body = std::move(r->body);
      } else if (code == CURLE_OK) {
        res.error = "HTTP " + std::to_string(status);
        retryable = status == 408 || status == 429 || status >= 500;
      } else {
        res.error = r->errbuf[0] ? std::string(r->errbuf) : std::string(curl_easy_strerror(code));
        retryable = code == CURLE_OPERATION_TIMEDOUT || code == CURLE_COULDNT_CONNECT ||
                    code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR || code == CURLE_GOT_NOTHING ||
                    code == CURLE_PARTIAL_FILE || code == CURLE_COULDNT_RESOLVE_HOST ||
                    code == CURLE_SSL_CONNECT_ERROR;
      }
      if (!res.ok && retryable && r->attempts <= opts_.retries) {
        double delay = std::min(opts_.backoff_max_s, opts_.backoff_s * std::pow(2.0, r->attempts - 1));
        r->not_before = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(delay * 1e6));
        waiting.push_back(std::move(r));
        continue;
      }
      if (!res.ok && r->attempts > 1) res.error += " (after " + std::to_string(r->attempts) + " attempts)";
      finish(std::move(r), std::move(res));
    }

    // Sleep until there is socket activity, a wakeup (new request / stop), or the next
    // retry is due.
    int timeout_ms = 200;
    if (!waiting.empty()) {
      auto next = std::min_element(waiting.begin(), waiting.end(),
                                   [](auto& a, auto& b) { return a->not_before < b->not_before; })
                      ->get()
                      ->not_before;
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(ms, 0, 200));
    }
    curl_multi_poll(multi, nullptr, 0, timeout_ms, nullptr);
  }

  // Shutdown: everything still pending fails with "cancelled".
  for (auto& [e, r] : active) {
    curl_multi_remove_handle(multi, e);
    curl_easy_cleanup(e);
    HttpResult res;
    res.error = "cancelled";
    finish(std::move(r), std::move(res));
  }
  for (auto& r : waiting) {
    HttpResult res;
    res.error = "cancelled";
    finish(std::move(r), std::move(res));
  }
  std::deque<std::unique_ptr<Request>> rest;
  {
    std::lock_guard<std::mutex> lk(mu_);
    rest.swap(queue_);
  }
  for (auto& r : rest) {
    HttpResult res;
    res.error = "cancelled";
    finish(std::move(r), std::move(res));
  }
}

}  // namespace recap::io
