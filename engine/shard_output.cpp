#include "engine/shard_output.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "io/tar.h"

namespace recap::engine {

using nlohmann::ordered_json;

std::string shard_stats_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, shard + "_stats.json");
}
std::string shard_tar_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, shard + ".tar");
}
std::string shard_jsonl_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, shard + ".jsonl");
}

namespace {
std::string log_partial_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, "." + shard + ".log.partial");
}
std::string tar_partial_path(const std::string& out_dir, const std::string& shard) {
  return io::join_path(out_dir, "." + shard + ".tar.partial");
}

// Fingerprint recorded in a stats file or a partial log's header; "" when unreadable.
std::string stats_fingerprint(const std::string& path, std::string* why) {
  try {
    auto j = ordered_json::parse(io::read_file(path));
    if (j.is_object() && j.contains("fingerprint") && j["fingerprint"].is_string())
      return j["fingerprint"].get<std::string>();
    *why = "has no fingerprint";
  } catch (const std::exception& e) {
    *why = std::string("cannot be read (") + e.what() + ")";
  }
  return "";
}

std::string log_fingerprint(const std::string& path, std::string* why) {
  std::string text;
  try {
    text = io::read_file(path);
  } catch (const std::exception& e) {
    *why = e.what();
    return "";
  }
  size_t nl = text.find('\n');
  if (nl == std::string::npos) return "";  // torn header: nothing usable, treated as empty
  try {
    auto h = ordered_json::parse(text.substr(0, nl));
    if (h.contains("fingerprint")) return h["fingerprint"].get<std::string>();
  } catch (...) {
  }
  *why = "has an unreadable header";
  return "";
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}
}  // namespace

ShardProbe probe_shard(const std::string& out_dir, const std::string& shard, const std::string& fingerprint) {
  ShardProbe p;
  std::string why;
  const std::string stats = shard_stats_path(out_dir, shard);
  if (io::file_exists(stats)) {
    std::string fp = stats_fingerprint(stats, &why);
    if (fp == fingerprint) {
      p.state = ShardState::Done;
    } else {
      p.state = ShardState::Conflict;
      p.detail = fp.empty()
                     ? stats + " " + why
                     : stats + " was written with fingerprint " + fp + " (this run: " + fingerprint + ")";
    }
    return p;
  }
  const std::string log = log_partial_path(out_dir, shard);
  if (io::file_exists(log)) {
    std::string fp = log_fingerprint(log, &why);
    if (!fp.empty() && fp != fingerprint) {
      p.state = ShardState::Conflict;
      p.detail = log + " (an unfinished run) has fingerprint " + fp + " (this run: " + fingerprint + ")";
    } else if (fp.empty() && !why.empty()) {
      p.state = ShardState::Conflict;
      p.detail = log + " " + why;
    }
  }
  return p;
}

std::unique_ptr<ShardOutput> ShardOutput::open(const std::string& out_dir, const std::string& shard,
                                               const std::string& fingerprint, bool overwrite, int64_t mtime,
                                               ShardProbe* probe) {
  std::unique_ptr<ShardOutput> o(new ShardOutput());
  o->out_dir_ = out_dir;
  o->shard_ = shard;
  o->fingerprint_ = fingerprint;
  o->mtime_ = mtime;
  o->lock_path_ = io::join_path(out_dir, "." + shard + ".lock");
  o->tar_partial_ = tar_partial_path(out_dir, shard);
  o->log_partial_ = log_partial_path(out_dir, shard);
  o->lock_fd_ = ::open(o->lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (o->lock_fd_ < 0) throw io::IoError("cannot create " + o->lock_path_ + ": " + std::strerror(errno));
  if (::flock(o->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    probe->state = ShardState::Busy;
    probe->detail = "another process is working on shard " + shard;
    return nullptr;
  }
  // Under the lock, look again: another worker may have finished it meanwhile.
  *probe = probe_shard(out_dir, shard, fingerprint);
  if (probe->state == ShardState::Done) return nullptr;
  if (probe->state == ShardState::Conflict) {
    if (!overwrite) throw FingerprintMismatch(probe->detail + "; pass --overwrite to replace it");
    // Replace: the old done marker goes first, so the shard never looks done with mixed data.
    ::unlink(shard_stats_path(out_dir, shard).c_str());
    ::unlink(o->log_partial_.c_str());
    ::unlink(o->tar_partial_.c_str());
    io::fsync_dir(out_dir);
    probe->state = ShardState::Todo;
  }
  o->load_partial(overwrite);
  return o;
}

void ShardOutput::load_partial(bool /*overwrite*/) {
  // Read back what an earlier run finished; keep only records whose tar bytes are present.
  std::string text;
  if (io::file_exists(log_partial_)) text = io::read_file(log_partial_);
  off_t tar_size = io::file_exists(tar_partial_) ? file_size(tar_partial_) : 0;
  uint64_t keep_tar = 0;
  size_t keep_log = 0;
  size_t pos = 0;
  bool header_ok = false;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // torn last line
    std::string line = text.substr(pos, nl - pos);
    ordered_json j;
    try {
      j = ordered_json::parse(line);
    } catch (...) {
      break;
    }
    if (!header_ok) {
      if (!j.contains("fingerprint") || j["fingerprint"] != fingerprint_) break;
      first_start_time_ = j.value("start_time", 0.0);
      header_ok = true;
      keep_log = nl + 1;
      pos = nl + 1;
      continue;
    }
    uint64_t tar_end = j.value("tar_end", uint64_t(0));
    if (!j.contains("i") || !j.contains("meta") || tar_end < keep_tar ||
        static_cast<off_t>(tar_end) > tar_size)
      break;
    int64_t idx = j["i"].get<int64_t>();
    if (!done_.insert(idx).second) break;  // a duplicate would mean corruption: stop trusting here
    records_[idx] = j["meta"].dump();
    keep_tar = tar_end;
    keep_log = nl + 1;
    pos = nl + 1;
  }
  resumed_ = static_cast<int64_t>(done_.size());
  if (!header_ok) {
    // Fresh start (or a torn header): new files.
    tar_ = io::OutFile(tar_partial_, io::OutFile::Mode::Truncate);
    log_ = io::OutFile(log_partial_, io::OutFile::Mode::Truncate);
    first_start_time_ = 0;
    return;
  }
  if (::truncate(tar_partial_.c_str(), static_cast<off_t>(keep_tar)) != 0 && errno != ENOENT)
    throw io::IoError("cannot truncate " + tar_partial_ + ": " + std::strerror(errno));
  if (::truncate(log_partial_.c_str(), static_cast<off_t>(keep_log)) != 0)
    throw io::IoError("cannot truncate " + log_partial_ + ": " + std::strerror(errno));
  tar_ = io::OutFile(tar_partial_, io::OutFile::Mode::Append);
  log_ = io::OutFile(log_partial_, io::OutFile::Mode::Append);
}

void ShardOutput::append(const SampleOutcome& s) {
  if (finished_) throw std::logic_error("append after finish");
  if (!done_.insert(s.index).second) return;  // already recorded (resume): never twice
  if (log_.bytes_written() == 0) {
    ordered_json h;
    h["recap_partial"] = 1;
    h["shard"] = shard_;
    h["fingerprint"] = fingerprint_;
    h["start_time"] = static_cast<double>(::time(nullptr));
    log_.write(h.dump() + "\n");
  }
  if (s.success) {
    std::string members;
    if (!s.image_bytes.empty())
      members += io::tar_member_bytes(s.key + "." + s.image_ext, s.image_bytes, mtime_);
    for (size_t c = 0; c < s.captions.size(); ++c) {
      std::string name = c == 0 ? s.key + ".txt" : s.key + "." + std::to_string(c) + ".txt";
      members += io::tar_member_bytes(name, s.captions[c], mtime_);
    }
    members += io::tar_member_bytes(
        s.key + ".json", s.meta.dump(4, ' ', false, nlohmann::json::error_handler_t::replace), mtime_);
    tar_.write(members);
  }
  ordered_json rec;
  rec["i"] = s.index;
  rec["tar_end"] = tar_.bytes_written();
  rec["meta"] = s.meta;
  std::string line = rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  log_.write(line);
  // A process kill loses nothing already written; against a machine crash, sync every few
  // seconds, tar before log, so a durable log record always has durable tar bytes.
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  if (now - last_sync_ >= 10) {
    tar_.sync();
    log_.sync();
    last_sync_ = now;
  }
  records_[s.index] = s.meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::ordered_json ShardOutput::finish(const ordered_json& extra, double start_time, double end_time) {
  // Stats from every record (this run's and resumed ones).
  int64_t count = 0, successes = 0, failed_download = 0, failed_decode = 0, failed_parse = 0,
          failed_caption = 0;
  int64_t tokens_in = 0, tokens_out = 0;
  ordered_json status_dict = ordered_json::object();
  std::string sidecar;
  for (auto& [idx, line] : records_) {
    sidecar += line;
    sidecar += '\n';
    auto m = ordered_json::parse(line);
    ++count;
    std::string status = m.value("status", "");
    if (status == "success") ++successes;
    if (status == "failed_to_download") ++failed_download;
    if (status == "failed_to_decode") ++failed_decode;
    if (status == "failed_to_parse") ++failed_parse;
    if (status == "failed_to_caption") ++failed_caption;
    std::string k = status == "success"
                        ? "success"
                        : (m["error_message"].is_string() ? m["error_message"].get<std::string>() : status);
    status_dict[k] = status_dict.value(k, 0) + 1;
    tokens_in += m.value("tokens_in", int64_t(0));
    tokens_out += m.value("tokens_out", int64_t(0));
  }
  ordered_json st;
  st["count"] = count;
  st["successes"] = successes;
  st["failed_to_download"] = failed_download;
  st["failed_to_resize"] = 0;  // img2dataset key; we never resize the stored image
  st["failed_to_decode"] = failed_decode;
  st["failed_to_parse"] = failed_parse;
  st["failed_to_caption"] = failed_caption;
  st["duration"] = end_time - start_time;
  st["start_time"] = start_time;
  st["end_time"] = end_time;
  st["status_dict"] = status_dict;
  st["tokens_in"] = tokens_in;
  st["tokens_out"] = tokens_out;
  st["resumed_samples"] = resumed_;
  if (first_start_time_ > 0) st["first_start_time"] = first_start_time_;
  for (auto it = extra.begin(); it != extra.end(); ++it) st[it.key()] = it.value();
  st["fingerprint"] = fingerprint_;

  // 1. tar
  tar_.write(io::tar_end_bytes());
  tar_.sync();
  tar_.close();
  io::publish_file(tar_partial_, shard_tar_path(out_dir_, shard_), false);
  // 2. sidecar
  io::atomic_write(shard_jsonl_path(out_dir_, shard_), sidecar);
  // 3. stats, last: the done marker.
  log_.sync();
  log_.close();
  if (!io::exclusive_write(shard_stats_path(out_dir_, shard_),
                           st.dump(4, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"))
    throw io::IoError(shard_stats_path(out_dir_, shard_) +
                      " appeared while this process held the shard lock");
  ::unlink(log_partial_.c_str());
  finished_ = true;
  return st;
}

ShardOutput::~ShardOutput() {
  if (lock_fd_ >= 0) {
    if (finished_) ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
  }
}

}  // namespace recap::engine
