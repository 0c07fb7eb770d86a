# Installs gpurun (binary) and exports gpurun::worker for find_package(gpurun).
include(CMakePackageConfigHelpers)
install(EXPORT gpurunTargets NAMESPACE gpurun:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gpurun)
configure_package_config_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/gpurunConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/gpurunConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gpurun)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/gpurunConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/gpurunConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/gpurunConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/gpurun)
