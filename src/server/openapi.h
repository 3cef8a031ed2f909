#pragma once
// The OpenAPI 3.1 description of what `qed serve` serves (/openapi.json): clients and schemathesis read it.
#include <nlohmann/json.hpp>
#include <string>

namespace qed::server {

nlohmann::json openapi_spec(const std::string& model_name);

}  // namespace qed::server
