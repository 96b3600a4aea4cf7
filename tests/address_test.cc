#include "policy/address.h"

#include <gtest/gtest.h>

namespace mw {
namespace {

Cidr P(const char* s) {
  Cidr c;
  std::string err;
  EXPECT_TRUE(ParseCidr(s, &c, &err)) << s << ": " << err;
  return c;
}

std::string Err(const char* s) {
  Cidr c;
  std::string err;
  EXPECT_FALSE(ParseCidr(s, &c, &err)) << s;
  return err;
}

TEST(Address, ParsesHostsAndPrefixes) {
  EXPECT_EQ(P("198.51.100.7").prefix, 32);
  EXPECT_EQ(P("198.51.100.0/24").prefix, 24);
  EXPECT_EQ(P("2001:db8::/32").family, Family::kV6);
  EXPECT_EQ(P("::1").prefix, 128);
  EXPECT_EQ(P("0.0.0.0/0").prefix, 0);
}

TEST(Address, RejectsBadInput) {
  EXPECT_NE(Err("198.51.100.300").find("not an IPv4 or IPv6 address"), std::string::npos);
  EXPECT_NE(Err("198.51.100.0/33").find("too long"), std::string::npos);
  EXPECT_NE(Err("2001:db8::/129").find("too long"), std::string::npos);
  EXPECT_NE(Err("198.51.100.0/").find("bad prefix"), std::string::npos);
  EXPECT_NE(Err("198.51.100.0/-1").find("bad prefix"), std::string::npos);
  EXPECT_NE(Err("198.51.100.0/2x").find("bad prefix"), std::string::npos);
  EXPECT_NE(Err("").find("not an IPv4"), std::string::npos);
  EXPECT_NE(Err("office").find("not an IPv4"), std::string::npos);
  EXPECT_NE(Err(" 198.51.100.1").find("not an IPv4"), std::string::npos);
}

TEST(Address, HostBitsSuggestTheNetwork) {
  EXPECT_NE(Err("198.51.100.7/24").find("did you mean 198.51.100.0/24"), std::string::npos);
  EXPECT_NE(Err("2001:db8::1/64").find("did you mean 2001:db8::/64"), std::string::npos);
}

TEST(Address, NormalizeMergesOverlapsAndNeighbours) {
  auto iv = NormalizeToIntervals(Family::kV4, {P("10.0.0.0/24"), P("10.0.1.0/24"), P("10.0.0.5"),
                                               P("10.0.3.0/24"), P("2001:db8::/32")});
  ASSERT_EQ(iv.size(), 2u);
  EXPECT_EQ(FormatInterval(Family::kV4, iv[0]), "10.0.0.0/23");
  EXPECT_EQ(FormatInterval(Family::kV4, iv[1]), "10.0.3.0/24");
}

TEST(Address, NormalizeKeepsDuplicatesOnce) {
  auto iv = NormalizeToIntervals(Family::kV4, {P("192.0.2.1"), P("192.0.2.1"), P("192.0.2.3")});
  ASSERT_EQ(iv.size(), 2u);
  EXPECT_EQ(FormatInterval(Family::kV4, iv[0]), "192.0.2.1");
  EXPECT_EQ(FormatInterval(Family::kV4, iv[1]), "192.0.2.3");
}

TEST(Address, TopOfTheAddressSpaceHasNoEnd) {
  auto iv = NormalizeToIntervals(Family::kV4, {P("255.255.255.255"), P("255.255.255.0/25")});
  ASSERT_EQ(iv.size(), 2u);
  EXPECT_FALSE(iv[0].to_max);
  EXPECT_TRUE(iv[1].to_max);
  EXPECT_EQ(FormatInterval(Family::kV4, iv[1]), "255.255.255.255");
  auto all = NormalizeToIntervals(Family::kV6, {P("::/0"), P("2001:db8::1")});
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(all[0].to_max);
  EXPECT_EQ(FormatInterval(Family::kV6, all[0]), "::/0");
}

TEST(Address, FormatsRangesThatAreNotPrefixes) {
  auto iv = NormalizeToIntervals(Family::kV4, {P("10.0.0.1"), P("10.0.0.2")});
  ASSERT_EQ(iv.size(), 1u);
  EXPECT_EQ(FormatInterval(Family::kV4, iv[0]), "10.0.0.1-10.0.0.2");
}

}  // namespace
}  // namespace mw
