#pragma once
// Where the embedded demo model (models/demo) lives, so commands work without --model.
#include <string>

namespace qed::cli {

// $QED_DEMO_MODEL when set, else the first of <binary dir>/models/demo, <binary dir>/../models/demo (build/qed in a
// checkout), <binary dir>/../share/qed/models/demo (installed) and ./models/demo that holds a config.json; throws
// qed::Error naming the places looked at when none does.
std::string find_demo_model_dir();

}  // namespace qed::cli
