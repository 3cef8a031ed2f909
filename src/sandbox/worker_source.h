#pragma once
// worker.py, embedded at build time (see CMakeLists.txt) so `qed sandbox` runs from any directory.
namespace qed::sandbox {
extern const char* const kWorkerSource;
}
