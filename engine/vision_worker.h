// The image tower on its own thread, so the decoder keeps stepping while images are encoded.
//
// The caption loop submits one batch at a time (B preprocessed images, [B, 3, S, S] f32) with
// the number of OpenMP threads the tower may use for it; the worker runs
// LlavaModel::encode_images (CLIP + projector) and hands back [B, P, text.hidden] features.
// The loop splits the thread budget while both run (models::LlavaModel allows encode_images
// and forward concurrently: vision and language keep separate scratch) and gives the whole
// budget to whichever runs alone. Results do not depend on the split: every kernel's output
// element is computed in the same order whatever the thread count.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "models/llava.h"

namespace recap::engine {

struct VisionBatch {
  std::vector<uint64_t> tags;   // the caller's handles, one per image, in batch order
  std::vector<float> pixels;    // [B, 3, S, S] (released once encoded)
  std::vector<float> features;  // [B, P, text.hidden]
  int threads = 1;              // OpenMP threads for this batch
  double ms = 0;                // wall time of encode_images
  std::string error;            // non-empty when encode_images threw
};

class VisionWorker {
 public:
  explicit VisionWorker(const models::LlavaModel& model);
  ~VisionWorker();  // finishes the batch in progress, then joins
  VisionWorker(const VisionWorker&) = delete;
  VisionWorker& operator=(const VisionWorker&) = delete;

  // True from submit() until the batch is collected.
  bool busy() const;
  // Threads of the batch in progress (0 when idle).
  int threads_in_use() const;
  // Starts a batch; precondition: !busy().
  void submit(VisionBatch batch);
  // Moves the finished batch into *out and returns true; waits up to timeout_ms for it
  // (0: just polls). False when idle or still running.
  bool collect(VisionBatch* out, int timeout_ms);

 private:
  void loop();

  const models::LlavaModel& model_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool submitted_ = false;  // a batch waits for or is in the worker
  bool finished_ = false;   // ... and is done
  bool quit_ = false;
  VisionBatch batch_;
  std::thread thread_;
};

}  // namespace recap::engine
