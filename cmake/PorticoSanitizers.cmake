# PORTICO_SANITIZE=ON builds everything with ASan + UBSan. The link flags are part of the exported
# interface so a consumer of a sanitized install links the runtime too.
function(portico_sanitize target)
  if(PORTICO_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer
      -fno-sanitize-recover=undefined)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "OBJECT_LIBRARY")
      return()
    endif()
    if(type STREQUAL "EXECUTABLE")
      target_link_options(${target} PRIVATE -fsanitize=address,undefined)
    else()
      target_link_options(${target} INTERFACE -fsanitize=address,undefined)
    endif()
  endif()
endfunction()
