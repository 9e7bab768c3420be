# Warnings as errors on portico's own code (never on Asio/Beast/llhttp, which are system headers).
function(portico_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Werror>
    # GCC 12 misreads Asio's coroutine frame allocator as a mismatched new/delete pair.
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-mismatched-new-delete>)
endfunction()
