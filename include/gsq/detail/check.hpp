// check.hpp: GSQ_CHECK for public preconditions and GSQ_DASSERT for internal invariants.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define GSQ_HAS_EXCEPTIONS 1
#include <stdexcept>
#else
#define GSQ_HAS_EXCEPTIONS 0
#endif

namespace gsq::detail {

/// Concatenates any streamable arguments into one message.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// Reports a failed public precondition: throws std::invalid_argument, or prints and aborts
/// when exceptions are disabled.
[[noreturn]] inline void fail(const std::string& message, const char* file, int line) {
#if GSQ_HAS_EXCEPTIONS
  (void)file;
  (void)line;
  throw std::invalid_argument(message);
#else
  std::fprintf(stderr, "gsq: %s (%s:%d)\n", message.c_str(), file, line);
  std::abort();
#endif
}

}  // namespace gsq::detail

/// Always-on check at a public boundary. The message arguments are streamed together and are
/// evaluated only when the check fails.
#define GSQ_CHECK(cond, ...)                                                               \
  do {                                                                                     \
    if (!(cond)) ::gsq::detail::fail(::gsq::detail::cat(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

#ifndef NDEBUG
#define GSQ_DASSERT(cond)                                                                   \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "gsq: internal invariant failed: %s (%s:%d)\n", #cond, __FILE__, \
                   __LINE__);                                                               \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)
#else
// Unevaluated, so names used only in assertions still count as used.
#define GSQ_DASSERT(cond) static_cast<void>(sizeof(!(cond)))
#endif
