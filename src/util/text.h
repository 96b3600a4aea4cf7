// Text that leaves mailward: valid UTF-8 for JSON, short escaped excerpts for error messages.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mw {

/// Whether `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(std::string_view s);

/// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD.
/// Valid input is returned unchanged.
std::string ToValidUtf8(std::string_view s);

/// What an error message may quote of untrusted text: control characters, backslashes and
/// bytes that are not UTF-8 escaped (\n, \t, \x1b, ...), at most `max` characters of the input,
/// then "..." when cut. A 20 MB line becomes 80 characters.
std::string Excerpt(std::string_view s, size_t max = 80);

/// At most `max` bytes of `s`, cut on a UTF-8 character boundary, then "..." when cut: for data
/// echoed in reports (a 5 MB Dovecot value is not printed whole).
std::string Truncate(std::string_view s, size_t max = 1024);

/// "1 finding", "3 findings", "0 findings"; `plural` when the word does not just take an "s".
std::string Plural(size_t n, std::string_view singular, std::string_view plural = {});

}  // namespace mw
