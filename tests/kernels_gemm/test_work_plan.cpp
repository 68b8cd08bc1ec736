// The GEMM work split (kernels/gemm_internal.h, shared by the AVX2 and AVX-512 drivers): every
// (panel, M-tile) pair belongs to exactly one item, chunks are whole panel steps except the
// matrix's last, and every thread gets an item when there is a step per thread.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/gemm_internal.h"

using recap::kernels::detail::GemmWorkPlan;
using recap::kernels::detail::plan_gemm_work;

TEST(GemmWorkPlan, CoversEveryPanelAndTileOnce) {
  for (int64_t panels : {1, 2, 3, 7, 31, 32, 33, 64, 65, 100, 256, 896, 8016})
    for (int64_t tiles : {1, 2, 3, 5, 80})
      for (int threads : {1, 2, 3, 8})
        for (int64_t step : {1, 2, 3, 4}) {
          SCOPED_TRACE(testing::Message() << "panels " << panels << " tiles " << tiles << " threads "
                                          << threads << " step " << step);
          const GemmWorkPlan plan = plan_gemm_work(panels, tiles, threads, step);
          std::vector<int> seen(static_cast<size_t>(panels * tiles), 0);
          for (int64_t it = 0; it < plan.items; ++it) {
            int64_t p0, p1, t0, t1;
            plan.item(it, &p0, &p1, &t0, &t1);
            ASSERT_LE(p1, panels);
            ASSERT_LE(t1, tiles);
            if (p1 < panels && p1 > p0) {
              EXPECT_EQ((p1 - p0) % step, 0) << "only the last chunk may be partial";
            }
            for (int64_t p = p0; p < p1; ++p)
              for (int64_t t = t0; t < t1; ++t) ++seen[static_cast<size_t>(p * tiles + t)];
          }
          for (int c : seen) ASSERT_EQ(c, 1);
          if (panels >= threads * step) {
            EXPECT_GE(plan.items, threads);
          }
        }
}
