// main.cpp: the Catch2 main() of gsq_tests; the tests themselves live in tests/*_test.cpp.
// Defined here rather than linked from Catch2WithMain, so a cross build needs only the header.
#if GSQ_CATCH2_MAJOR >= 3
#include <catch2/catch_session.hpp>

int main(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
#else
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
