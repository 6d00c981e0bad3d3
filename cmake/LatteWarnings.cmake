# Warnings and optimisation flags shared by every Latte target.
add_compile_options(
  "$<$<COMPILE_LANGUAGE:CXX>:-Wall;-Wextra;-Wno-unused-parameter;-Wno-missing-field-initializers>"
  "$<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CONFIG:Release>>:-O3>")
# -march=native is unsafe for binaries moved between machines; AVX2+FMA is the floor on every
# x86 machine Latte targets (the dev/CI EPYC and the GPU hosts).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-mavx2;-mfma;-mf16c>")
endif()
