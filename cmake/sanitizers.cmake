# GPURUN_SANITIZE=address,undefined | thread applies to every target of the build.
if(GPURUN_SANITIZE)
  set(_gpurun_san "-fsanitize=${GPURUN_SANITIZE}" -fno-omit-frame-pointer -fno-sanitize-recover=all)
  # Quoted: the flag list must stay inside each generator expression.
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_gpurun_san}>" "$<$<COMPILE_LANGUAGE:C>:${_gpurun_san}>")
  add_link_options(${_gpurun_san})
  message(STATUS "gpurun: sanitizers ${GPURUN_SANITIZE}")
endif()
