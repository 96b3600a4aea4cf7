// Test helper: a Cidr from text, failing the test when it does not parse.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "policy/address.h"

namespace mw::testing {

inline Cidr C(const char* text) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(text, &c, &err)) << text << ": " << err;
  return c;
}

}  // namespace mw::testing
