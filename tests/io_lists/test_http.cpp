// io/http against a loopback server started by the test: success, 404 (no retry), 503
// retried with backoff until success, retries exhausted, size limit, timeout, many in flight.
#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "io/http.h"
#include "loopback_http.h"

using namespace recap::io;
using recap::testing::LoopbackHttpServer;

namespace {
HttpOptions fast_opts() {
  HttpOptions o;
  o.backoff_s = 0.01;
  o.backoff_max_s = 0.05;
  o.timeout_s = 5;
  o.connect_timeout_s = 5;
  return o;
}
}  // namespace

TEST(Http, OkNotFoundAndRetries) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  srv.set("/ok", {200, "hello", 0, 0});
  srv.set("/flaky", {200, "finally", 2, 0});
  srv.set("/down", {200, "never", 100, 0});
  HttpClient c(fast_opts());
  auto ok = c.fetch_sync(srv.url("/ok"));
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.body, "hello");
  EXPECT_EQ(ok.attempts, 1);

  auto nf = c.fetch_sync(srv.url("/missing"));
  EXPECT_FALSE(nf.ok);
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.error, "HTTP 404");
  EXPECT_EQ(srv.hits("/missing"), 1);  // 4xx is final

  auto fl = c.fetch_sync(srv.url("/flaky"));
  EXPECT_TRUE(fl.ok) << fl.error;
  EXPECT_EQ(fl.body, "finally");
  EXPECT_EQ(fl.attempts, 3);

  auto dn = c.fetch_sync(srv.url("/down"));
  EXPECT_FALSE(dn.ok);
  EXPECT_EQ(dn.attempts, 4);  // 1 + 3 retries
  EXPECT_NE(dn.error.find("HTTP 503"), std::string::npos);
}

TEST(Http, SizeLimitAndTimeoutAndBadScheme) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  srv.set("/big", {200, std::string(5000, 'b'), 0, 0});
  srv.set("/slow", {200, "late", 0, 3000});
  auto o = fast_opts();
  o.max_bytes = 1000;
  o.timeout_s = 0.3;
  o.retries = 1;
  HttpClient c(o);
  auto big = c.fetch_sync(srv.url("/big"));
  EXPECT_FALSE(big.ok);
  EXPECT_NE(big.error.find("size limit"), std::string::npos) << big.error;
  auto slow = c.fetch_sync(srv.url("/slow"));
  EXPECT_FALSE(slow.ok);
  EXPECT_EQ(slow.attempts, 2);
  EXPECT_NE(slow.error.find("timed out"), std::string::npos) << slow.error;
  auto file = c.fetch_sync("file:///etc/passwd");
  EXPECT_FALSE(file.ok);
}

TEST(Http, ManyInFlightAllComplete) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  for (int i = 0; i < 40; ++i) srv.set("/f" + std::to_string(i), {200, "body" + std::to_string(i), 0, 20});
  auto o = fast_opts();
  o.max_in_flight = 8;
  HttpClient c(o);
  std::vector<std::promise<HttpResult>> ps(40);
  for (int i = 0; i < 40; ++i)
    c.fetch(srv.url("/f" + std::to_string(i)), [&ps, i](HttpResult r) { ps[i].set_value(std::move(r)); });
  for (int i = 0; i < 40; ++i) {
    auto r = ps[i].get_future().get();
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.body, "body" + std::to_string(i));
  }
}
