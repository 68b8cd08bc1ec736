// io/http against a loopback server started by the test: success, 404 (no retry), 503
// retried with backoff until success, retries exhausted, size limit, timeout, many in flight,
// bodies bounded while they stream (chunked, gzip bomb, Content-Length), X-Robots-Tag and
// the User-Agent.
#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <future>

#include "io/http.h"
#include "loopback_http.h"

using namespace recap::io;
using recap::testing::gzip;
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

// Every body byte is counted as it arrives: a chunked answer without Content-Length, a gzip
// body that inflates past the limit from a few KiB on the wire, and an announced
// Content-Length over the limit all fail "too_large", at once (final, no retry).
TEST(Http, BodiesAreBoundedWhileTheyStream) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  const uint64_t limit = 100000;
  LoopbackHttpServer::Route chunked{200, std::string(2 << 20, 'c'), 0, 0};
  chunked.chunked = true;
  srv.set("/chunked", chunked);
  LoopbackHttpServer::Route small_chunked{200, std::string(limit, 's'), 0, 0};
  small_chunked.chunked = true;
  srv.set("/chunked_ok", small_chunked);
  const std::string bomb = gzip(std::string(64 << 20, '\0'));
  ASSERT_LT(bomb.size(), 100000u);  // small on the wire
  LoopbackHttpServer::Route gz{200, bomb, 0, 0};
  gz.headers = {"Content-Encoding: gzip"};
  srv.set("/bomb.gz", gz);
  const std::string text(50000, 't');
  LoopbackHttpServer::Route gz_ok{200, gzip(text), 0, 0};
  gz_ok.headers = {"Content-Encoding: gzip"};
  srv.set("/ok.gz", gz_ok);
  LoopbackHttpServer::Route announced{200, "short", 0, 0};
  announced.content_length = 5000000;
  srv.set("/announced", announced);

  auto o = fast_opts();
  o.max_bytes = limit;
  HttpClient c(o);
  const std::string over = "larger than the size limit of 100000 bytes";
  auto ch = c.fetch_sync(srv.url("/chunked"));
  EXPECT_FALSE(ch.ok);
  EXPECT_EQ(ch.error, "too_large: body " + over);
  EXPECT_EQ(ch.attempts, 1);
  EXPECT_EQ(srv.hits("/chunked"), 1);

  auto ok = c.fetch_sync(srv.url("/chunked_ok"));  // exactly the limit passes
  EXPECT_TRUE(ok.ok) << ok.error;
  EXPECT_EQ(ok.body.size(), limit);

  auto b = c.fetch_sync(srv.url("/bomb.gz"));
  EXPECT_FALSE(b.ok);
  EXPECT_EQ(b.error, "too_large: body " + over);
  EXPECT_EQ(b.attempts, 1);

  auto g = c.fetch_sync(srv.url("/ok.gz"));  // the decoded bytes are what the caller gets
  EXPECT_TRUE(g.ok) << g.error;
  EXPECT_EQ(g.body, text);

  auto a = c.fetch_sync(srv.url("/announced"));
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.error, "too_large: Content-Length 5000000, " + over);
  EXPECT_EQ(a.attempts, 1);
}

// img2dataset's X-Robots-Tag rule: noai/noimageai/noindex/noimageindex, global or addressed to
// our token, refuse the image (final); directives for other agents do not; the User-Agent
// names the engine and the opt-out.
TEST(Http, XRobotsTagAndUserAgent) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  auto route = [](std::vector<std::string> headers) {
    LoopbackHttpServer::Route r{200, "image bytes", 0, 0};
    r.headers = std::move(headers);
    return r;
  };
  srv.set("/noai", route({"X-Robots-Tag: noai"}));
  srv.set("/ours", route({"X-Robots-Tag: recap-engine: noindex"}));
  srv.set("/ours_upper", route({"x-robots-tag: Recap-Engine: NoFollow, NoImageIndex"}));
  srv.set("/other_bot", route({"X-Robots-Tag: otherbot: noai, noindex"}));
  srv.set("/harmless", route({"X-Robots-Tag: nofollow", "X-Robots-Tag: unavailable_after: 2030-01-01"}));
  srv.set("/second_header", route({"X-Robots-Tag: nofollow", "X-Robots-Tag: noimageai"}));
  auto empty = route({"X-Robots-Tag: noai"});
  empty.body.clear();
  srv.set("/noai_empty", empty);

  HttpClient c(fast_opts());
  const std::string msg = "Use of image disallowed by X-Robots-Tag directive";
  auto n = c.fetch_sync(srv.url("/noai"));
  EXPECT_FALSE(n.ok);
  EXPECT_EQ(n.error, msg + " (noai)");
  EXPECT_EQ(n.attempts, 1);
  EXPECT_EQ(c.fetch_sync(srv.url("/ours")).error, msg + " (noindex)");
  EXPECT_EQ(c.fetch_sync(srv.url("/ours_upper")).error, msg + " (noimageindex)");
  EXPECT_EQ(c.fetch_sync(srv.url("/second_header")).error, msg + " (noimageai)");
  EXPECT_EQ(c.fetch_sync(srv.url("/noai_empty")).error, msg + " (noai)");
  auto other = c.fetch_sync(srv.url("/other_bot"));
  EXPECT_TRUE(other.ok) << other.error;
  EXPECT_EQ(other.body, "image bytes");
  auto harmless = c.fetch_sync(srv.url("/harmless"));
  EXPECT_TRUE(harmless.ok) << harmless.error;
  EXPECT_EQ(srv.user_agent("/noai"),
            "recap-engine (image recaptioning; opt out with X-Robots-Tag: noai or X-Robots-Tag: "
            "recap-engine: noai)");

  // An empty directive list (--disallowed-header-directives '') turns the check off.
  auto o = fast_opts();
  o.disallowed_header_directives = parse_directive_list("");
  o.user_agent = HttpOptions::user_agent_for("9.8.7");
  HttpClient off(o);
  auto ign = off.fetch_sync(srv.url("/noai"));
  EXPECT_TRUE(ign.ok) << ign.error;
  EXPECT_EQ(srv.user_agent("/noai"),
            "recap-engine/9.8.7 (image recaptioning; opt out with X-Robots-Tag: noai or X-Robots-Tag: "
            "recap-engine: noai)");
}

// A gzip body that decodes to nothing however long it runs (empty deflate blocks): the
// decoded count never grows, so the encoded bytes on the wire are what stops it.
TEST(Http, EncodedBytesOnTheWireAreBoundedToo) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  std::string body("\x1f\x8b\x08\0\0\0\0\0\0\x03", 10);  // gzip header
  const std::string empty_block("\0\0\0\xff\xff", 5);    // stored, not final, 0 bytes
  for (int i = 0; i < (4 << 20); ++i) body += empty_block;
  body += std::string("\x01\0\0\xff\xff", 5);  // the final (empty) block
  body += std::string(8, '\0');                // CRC32 and size of no data
  LoopbackHttpServer::Route r{200, body, 0, 0};
  r.headers = {"Content-Encoding: gzip"};
  r.chunked = true;
  srv.set("/empty_blocks.gz", r);
  auto o = fast_opts();
  o.max_bytes = 100000;
  HttpClient c(o);
  auto res = c.fetch_sync(srv.url("/empty_blocks.gz"));
  EXPECT_FALSE(res.ok);
  EXPECT_EQ(res.error, "too_large: encoded body larger than the wire limit of " +
                           std::to_string(o.wire_limit()) + " bytes");
  EXPECT_EQ(res.attempts, 1);
}

TEST(Http, DirectiveRules) {
  const std::vector<std::string> d = parse_directive_list(" NoAI, noimageai,,noindex ,noimageindex");
  EXPECT_EQ(d, (std::vector<std::string>{"noai", "noimageai", "noindex", "noimageindex"}));
  EXPECT_EQ(disallowing_robots_directive({"noindex, nofollow"}, "recap-engine", d), "noindex");
  EXPECT_EQ(disallowing_robots_directive({"googlebot: noindex"}, "recap-engine", d), "");
  EXPECT_EQ(disallowing_robots_directive({"none"}, "recap-engine", d), "");
  EXPECT_EQ(disallowing_robots_directive({"RECAP-ENGINE: noai"}, "recap-engine", d), "noai");
  EXPECT_EQ(disallowing_robots_directive({}, "recap-engine", d), "");
}
