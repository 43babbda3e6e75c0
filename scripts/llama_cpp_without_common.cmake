# Included by CMake right after llama.cpp's project() call when llama-cpp-python is compiled with
#   CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/scripts/llama_cpp_without_common.cmake"
# (the README's commands; the path must not contain spaces, CMAKE_ARGS is split on them).
# llama-cpp-python forces LLAMA_BUILD_COMMON on in the cache (its CMakeLists.txt), but nothing its Python package
# loads links llama.cpp's common library: with LLAVA_BUILD=OFF the wheel built this way lacks only libllama-common,
# and the demo and the tests run on it. Yet common and its HTTP client are half of the compile (162 + 20 of 352 CPU
# seconds in ninja's log of 0.3.36 on the Intel Xeon). A plain variable here shadows the cached ON inside
# llama.cpp's directory (CMP0077: its option() then keeps it), so common is neither built nor installed. libllama
# and ggml keep the same machine code (their .text sections' sha256): `python bench/llama_cpp_build.py` builds
# the package both ways, side by side.
set(LLAMA_BUILD_COMMON OFF)
