#include "util/status.h"

#include <gtest/gtest.h>

namespace mw {
namespace {

Result<int> Parse(bool good) {
  if (good) return 7;
  return Status::Invalid("x.yaml:1:2: not a number");
}

TEST(Status, ResultCarriesValueOrStatus) {
  auto a = Parse(true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 7);
  EXPECT_TRUE(a.status().ok());
  auto b = Parse(false);
  EXPECT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kInvalidPolicy);
  EXPECT_EQ(b.status().WithContext("loading").message(), "loading: x.yaml:1:2: not a number");
}

TEST(StatusDeathTest, ValueOfAnErrorAbortsWithTheMessageInsteadOfThrowing) {
  auto b = Parse(false);
  EXPECT_DEATH((void)b.value(), "Result::value\\(\\) on an error: x.yaml:1:2: not a number");
}

}  // namespace
}  // namespace mw
