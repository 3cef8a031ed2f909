// The serving benchmark's statistics: percentiles as numpy's default (linear interpolation), and the summary's
// arithmetic (TPOT, throughputs, which requests count) on hand-made records.
#include "bench/serve_load.h"

#include <gtest/gtest.h>

namespace qed::bench {
namespace {

TEST(Percentile, InterpolatesLinearlyBetweenOrderStatisticsAsNumpy) {
  // numpy.percentile([1, 2, 3, 4], [0, 50, 90, 99, 100]) = [1, 2.5, 3.7, 3.97, 4]
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_NEAR(percentile(v, 90), 3.7, 1e-12);
  EXPECT_NEAR(percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 4.0);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7.0);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0.0);
}

RequestRecord record(double ttft, double e2e, int out_tokens, std::vector<double> itl) {
  RequestRecord r;
  r.ok = true;
  r.ttft_s = ttft;
  r.e2e_s = e2e;
  r.prompt_tokens = 10;
  r.output_tokens = out_tokens;
  r.itl_s = std::move(itl);
  return r;
}

TEST(Summarize, ReportsBenchmarkServingMetricsOverSuccessfulRequests) {
  LoadResult result;
  result.duration_s = 2.0;
  result.records.push_back(record(0.1, 1.1, 11, {0.1, 0.1}));
  result.records.push_back(record(0.3, 0.3, 1, {}));  // one token: no TPOT
  RequestRecord failed;
  failed.error = "HTTP 400: bad";
  result.records.push_back(failed);
  const auto s = summarize(result);
  EXPECT_EQ(s["completed"], 2);
  EXPECT_EQ(s["failed"], 1);
  EXPECT_EQ(s["errors"][0], "HTTP 400: bad");
  EXPECT_EQ(s["total_input_tokens"], 20);
  EXPECT_EQ(s["total_output_tokens"], 12);
  EXPECT_DOUBLE_EQ(s["request_throughput"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(s["output_throughput"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(s["total_token_throughput"].get<double>(), 16.0);
  EXPECT_NEAR(s["ttft_ms"]["mean"].get<double>(), 200.0, 1e-9);
  EXPECT_NEAR(s["ttft_ms"]["std"].get<double>(), 100.0, 1e-9);   // population std (np.std)
  EXPECT_NEAR(s["tpot_ms"]["mean"].get<double>(), 100.0, 1e-9);  // (1.1 - 0.1) / (11 - 1)
  EXPECT_NEAR(s["itl_ms"]["median"].get<double>(), 100.0, 1e-9);
  EXPECT_NEAR(s["e2el_ms"]["p99"].get<double>(), 300.0 + 0.99 * 800.0, 1e-9);
}

}  // namespace
}  // namespace qed::bench
