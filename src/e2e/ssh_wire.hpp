// The SSH wire encoding (RFC 4251 §5) that OpenSSH keys and SSHSIG use: uint32 big-endian,
// and string = uint32 length ‖ bytes. Internal to hom_e2e.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace hom::ssh_wire {

inline void put_u32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>((v >> 24) & 0xff));
  out.push_back(static_cast<char>((v >> 16) & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

inline void put_string(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

// Reads from the front of a buffer; every read fails (false) rather than run past its end.
class Reader {
 public:
  explicit Reader(std::string_view data) : rest_(data) {}

  bool u32(std::uint32_t& v) {
    if (rest_.size() < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(rest_[i]);
    rest_.remove_prefix(4);
    return true;
  }
  bool string(std::string_view& s) {
    std::uint32_t n = 0;
    if (!u32(n) || n > rest_.size()) return false;
    s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  bool bytes(std::size_t n, std::string_view& s) {
    if (n > rest_.size()) return false;
    s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  bool empty() const { return rest_.empty(); }
  std::string_view rest() const { return rest_; }

 private:
  std::string_view rest_;
};

}  // namespace hom::ssh_wire
