#include "hom/presence.hpp"

#include <nlohmann/json.hpp>

#include "hom/response.hpp"

namespace hom {

using nlohmann::json;

std::string online_document(std::string_view version, std::int64_t since) {
  return json{{"online", true}, {"version", version}, {"since", since}, {"protocol", kProtocol}}
      .dump();
}

std::string offline_document() { return json{{"online", false}}.dump(); }

std::optional<Presence> parse_presence(std::string_view payload) {
  const auto parsed = parse_json(payload);
  if (!parsed || !parsed->is_object()) return std::nullopt;
  const json& doc = *parsed;
  const auto online = doc.find("online");
  if (online == doc.end() || !online->is_boolean()) return std::nullopt;
  Presence p;
  p.online = online->get<bool>();
  if (const auto v = doc.find("version"); v != doc.end() && v->is_string()) p.version = *v;
  if (const auto v = doc.find("protocol"); v != doc.end() && v->is_string()) p.protocol = *v;
  if (const auto s = doc.find("since"); s != doc.end() && s->is_number_integer()) {
    const bool fits = !s->is_number_unsigned() ||
                      s->get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX);
    if (fits) p.since = s->get<std::int64_t>();
  }
  return p;
}

}  // namespace hom
