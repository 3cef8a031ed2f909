# Run at every build (src/cli's qed_version target): writes version.h with the sha of the commit being built, so a
# binary's provenance (qed --version, bench JSON git_sha) names what it was built from, not what was configured.
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE QED_GIT_SHA OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT QED_GIT_SHA)
  set(QED_GIT_SHA unknown)
else()
  execute_process(COMMAND git diff --quiet HEAD -- WORKING_DIRECTORY ${SOURCE_DIR} RESULT_VARIABLE DIRTY ERROR_QUIET)
  if(DIRTY)
    set(QED_GIT_SHA "${QED_GIT_SHA}-dirty")
  endif()
endif()
configure_file(${INPUT} ${OUTPUT} @ONLY)  # rewritten only when the text changes: no needless recompiles
