#include "web_assets.hpp"

namespace hom::demo {

std::string content_type_for(std::string_view path) {
  const auto ends_with = [path](std::string_view suffix) {
    return path.size() >= suffix.size() && path.substr(path.size() - suffix.size()) == suffix;
  };
  if (ends_with(".html")) return "text/html; charset=utf-8";
  if (ends_with(".css")) return "text/css; charset=utf-8";
  if (ends_with(".js")) return "text/javascript; charset=utf-8";
  if (ends_with(".png")) return "image/png";
  return "application/octet-stream";
}

}  // namespace hom::demo
