// The demo API's web UI (src/demo/web/), embedded into the binary at build time by
// embed_web.cmake, and its logo, drawn as a PNG in code.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace hom::demo {

struct WebAsset {
  std::string_view path;   // "/index.html"
  std::string_view bytes;  // the file's exact bytes, static storage
};

// Every file of src/demo/web/, by the path it is served at.
const std::vector<WebAsset>& web_assets();

// The Content-Type for a file name by its extension ("application/octet-stream" if unknown).
std::string content_type_for(std::string_view path);

// A `size` x `size` RGBA PNG of the logo (a signal mark on a gradient tile). The pixels are
// stored uncompressed (deflate "stored" blocks), so the image weighs ~4 bytes a pixel: a
// realistic asset for a page that travels over MQTT. Deterministic; pure.
std::string logo_png(int size);

}  // namespace hom::demo
