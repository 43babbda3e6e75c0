# Included by CMake right after llama.cpp's project() call when llama-cpp-python is compiled with
#   CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/scripts/llama_cpp_lean_build.cmake"
# (the README's commands; the path must not contain spaces, CMAKE_ARGS is split on them). It makes the compile,
# the longest part of a first install, cheaper without changing a single log-probability (as measured)
# (`python bench/llama_cpp_build.py` builds both ways, side by side, and labels the same items with each).
#
# 1. No common library. llama-cpp-python forces LLAMA_BUILD_COMMON on in the cache (its CMakeLists.txt), but
# nothing its Python package loads links llama.cpp's common library: with LLAVA_BUILD=OFF the wheel built this way
# lacks only libllama-common. Yet common and its HTTP client were half of the compile (162 + 20 of 352 CPU seconds
# in ninja's log of 0.3.36 on the Intel Xeon). A plain variable here shadows the cached ON inside llama.cpp's
# directory (CMP0077: its option() then keeps it), so common is neither built nor installed.
set(LLAMA_BUILD_COMMON OFF)
# 2. libllama's host code at -O1. What is left is 70 % libllama (274 of 390 CPU seconds on the AMD EPYC): model
# loading, the tokenizer, the KV-cache bookkeeping and the graph each llama_decode builds, but none of the
# arithmetic, which runs in ggml's kernels (libggml-cpu, still at -O3 and -march=native). At -O1 libllama compiles
# in 183 CPU seconds and the build takes 113 s instead of 145 s there; labelling 440 texts with Qwen2.5-0.5B gave
# the same log-probabilities to the bit in 160-165 s either way, SmolLM2 200 texts in 15-16.5 s either way (GCC 12
# on the AMD EPYC; libllama gets no -march, so no FMA contraction to differ by. The bench: speeds within -5.5 to
# +5.4 %, the machine's run-to-run spread, the -O1 build the slower in 5 of 6 timings; docs/benchmarks.md). The
# call is deferred to the end of llama.cpp's directory, where its src/ has defined the target (DEFER needs CMake
# 3.19; llama-cpp-python requires 3.21); -O1 comes after CMAKE_CXX_FLAGS_RELEASE's -O3 on the command line, and
# GCC and Clang take the last -O. Only optimised configurations: a Debug build keeps its -O0. MSVC would read -O1
# as /O1 (optimise for size), so it is left alone.
if(NOT MSVC)
    cmake_language(DEFER CALL target_compile_options llama PRIVATE
                   "$<$<AND:$<CONFIG:Release,RelWithDebInfo>,$<COMPILE_LANGUAGE:CXX>>:-O1>")
endif()
