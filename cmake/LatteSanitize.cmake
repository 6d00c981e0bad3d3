# Sanitizer and fuzzing builds (issue 15). Both apply to every target, so a finding in a library is
# caught whichever test or fuzz target reaches it.
#
# LATTE_SANITIZE=address,undefined: AddressSanitizer + UndefinedBehaviorSanitizer for the test
#   suites (launch/run-sanitizers). UBSan does not recover, so a finding aborts the test and fails it
#   instead of printing a line nobody reads. Frame pointers keep ASan's stack traces complete.
# LATTE_FUZZ=ON: clang only; compiles every library with libFuzzer's coverage instrumentation plus
#   ASan + UBSan and builds the targets in tests/fuzz (each links -fsanitize=fuzzer for its main).
set(LATTE_SANITIZE "" CACHE STRING "Sanitizers for every target, e.g. address,undefined (empty: none)")
option(LATTE_FUZZ "Build the libFuzzer targets in tests/fuzz (requires clang; implies address,undefined)" OFF)

if(LATTE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "LATTE_FUZZ=ON needs clang (libFuzzer); configure with -DCMAKE_CXX_COMPILER=clang++")
  endif()
  if(NOT LATTE_SANITIZE)
    set(LATTE_SANITIZE "address,undefined")
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>")
endif()

if(LATTE_SANITIZE)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${LATTE_SANITIZE};-fno-sanitize-recover=all;-fno-omit-frame-pointer>")
  add_link_options("-fsanitize=${LATTE_SANITIZE}")
  message(STATUS "Latte: sanitizers ${LATTE_SANITIZE}")
endif()
