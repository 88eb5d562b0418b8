// hom-rss-floor: the resident memory homd cannot go below with the libraries it links. It is
// linked like homd (the core library, libcurl, Paho, spdlog, libsystemd) but serves nothing:
// it prints VmRSS after the dynamic loader is done, after libcurl's global initialisation,
// and after creating a Paho client (which initialises OpenSSL for TLS), then the libraries
// that hold the most resident pages. Run it as bench/README.md says ("Idle RSS").
#include <mqtt/async_client.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "hom/http_client.hpp"

namespace {

long status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

// Rss per mapped file (anonymous memory under "[anon]"), in kB, largest first.
std::vector<std::pair<long, std::string>> rss_by_mapping() {
  std::ifstream in("/proc/self/smaps");
  std::map<std::string, long> sizes;
  std::string name;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first == "Rss:") {
      long kb = 0;
      fields >> kb;
      sizes[name] += kb;
    } else if (first.find('-') != std::string::npos && first.back() != ':') {
      std::string perms, offset, dev, inode, path;
      fields >> perms >> offset >> dev >> inode >> path;
      name = path.empty() || path[0] == '[' ? "[anon]" : path.substr(path.rfind('/') + 1);
    }
  }
  std::vector<std::pair<long, std::string>> out;
  for (const auto& [n, kb] : sizes) out.emplace_back(kb, n);
  std::sort(out.rbegin(), out.rend());
  return out;
}

void step(const char* what) { std::cout << what << ": VmRSS " << status_kb("VmRSS") << " kB\n"; }

}  // namespace

int main() {
  step("loaded");
  hom::http_global_init();
  step("after curl_global_init");
  {
    mqtt::async_client client("tcp://127.0.0.1:1", "hom-rss-floor");
    step("after creating a Paho client");
  }
  // Referenced so that the linker keeps them, as homd does.
  spdlog::set_level(spdlog::level::warn);
  (void)sd_booted();
  std::cout << "largest mappings (kB):\n";
  int shown = 0;
  for (const auto& [kb, name] : rss_by_mapping()) {
    if (++shown > 12) break;
    std::cout << "  " << kb << "  " << name << "\n";
  }
  return 0;
}
